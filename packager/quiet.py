"""Hide the converters' log walls (Python and C++ alike) unless -v."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


class CapturedLog:
    def __init__(self):
        self._text = ""

    def text(self) -> str:
        return self._text


@contextlib.contextmanager
def captured_output(show: bool = False):
    """Send file descriptors 1 and 2 to a temporary file for the block.

    TensorFlow's converter logs from C++ straight to fd 2, so swapping
    sys.stderr is not enough. With ``show`` nothing is captured.
    """
    log = CapturedLog()
    if show:
        yield log
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield log
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            tmp.seek(0)
            log._text = tmp.read().decode("utf-8", errors="replace")
