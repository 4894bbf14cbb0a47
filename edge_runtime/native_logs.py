"""The native libraries' log lines on stderr: what their own switches cannot turn off, dropped; the rest passed on.

TensorFlow's libraries log through absl before anything initialises absl,
and absl then writes every line to fd 2 whatever TF_CPP_MIN_LOG_LEVEL says
(abseil/abseil-cpp#1957, open): "All log messages before
absl::InitializeLog() ...", the oneDNN notice, "Could not find cuda
drivers", twice (two of its libraries print them), and at the first device
look-up "failed call to cuInit" at ERROR level on every machine without a
GPU (CUDA_VISIBLE_DEVICES="" does not stop it). TFLite announces "INFO:
Created TensorFlow Lite XNNPACK delegate for CPU." on fd 2 with no switch
Python can reach (C++'s LoggerOptions only). So fd 2 itself is filtered:
:func:`filtered_stderr` points it at a pipe for a block and a thread passes
each line on as it comes (a delegate that hangs has said so first), except
the ones :func:`is_noise` names at the level TF_CPP_MIN_LOG_LEVEL asks for.

:func:`quiet_process` is for the entry points of the processes edgepack
starts or runs in (the CLIs, the converter's worker, the ladder's process,
the memory probe, the example's training): importing this module changes
nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import sys
import threading

LEVEL = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = 2  # INFO and WARNING off, errors on: TensorFlow's own meaning of 2
# absl's line: severity, MMDD, time, thread id, file:line]
ABSL_LINE = re.compile(rb"([IWEF])\d{4} \d+:\d+:\d+\.\d+\s+\d+ \S+:\d+\] ")
BEFORE_INIT = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# An ERROR line on every machine without a GPU, CPU-only TensorFlow included: no error of the user's.
NO_GPU = re.compile(rb"E\d{4} .*\] failed call to cuInit")
# The second line of cpu_feature_guard's INFO line ("This TensorFlow binary is optimized ...").
FEATURE_GUARD = b"To enable the following instructions: "
TFLITE_INFO = b"INFO: "  # TFLite's logger: INFO: / WARNING: / ERROR:
PARTIAL_LINE_WAIT = 0.2  # seconds a line without its newline waits before it is passed on as it is


def min_level(environ=os.environ) -> int:
    """TF_CPP_MIN_LOG_LEVEL as a number (0 shows everything), DEFAULT_LEVEL when unset or not a number."""
    try:
        return int(environ.get(LEVEL, DEFAULT_LEVEL))
    except ValueError:
        return DEFAULT_LEVEL


def is_noise(line: bytes, level: int = DEFAULT_LEVEL) -> bool:
    """Whether a native library's line is below ``level`` (TF_CPP_MIN_LOG_LEVEL's scale), or is the no-GPU error.

    FATAL lines, errors other than the no-GPU one, TFLite's warnings and
    errors, and every line in no native log format (ours, a delegate's, a
    traceback) are never noise.
    """
    line = line.rstrip(b"\r\n")
    if level < 1:
        return False
    if line == BEFORE_INIT or line.startswith(FEATURE_GUARD) or line.startswith(TFLITE_INFO):
        return True
    found = ABSL_LINE.match(line)
    if found is None:
        return False
    severity = found.group(1)
    return severity == b"I" or (severity == b"W" and level >= 2) or (severity == b"E" and bool(NO_GPU.match(line)))


def quiet_process(environ=os.environ) -> None:
    """For the start of a process edgepack starts or runs in, before TensorFlow or a TFLite runtime loads.

    TensorFlow's INFO and WARNING lines off (its C++ side reads
    TF_CPP_MIN_LOG_LEVEL when it loads; a value the user set wins), and the
    Python loggers of absl and TensorFlow at ERROR. TF_ENABLE_ONEDNN_OPTS is
    left alone: it changes the numerics, not only the notice.
    """
    environ.setdefault(LEVEL, str(DEFAULT_LEVEL))
    if min_level(environ) >= 2:
        for name in ("absl", "tensorflow"):
            logging.getLogger(name).setLevel(logging.ERROR)


class _Filter:
    """fd 2 pointed at a pipe; a thread passes on what is not noise to where fd 2 pointed before.

    A process started inside the block may outlive it holding the pipe
    (multiprocessing's resource tracker, started with the first spawned
    child, lives as long as this process): the block ends when everything
    written so far is passed on, not at the pipe's end, and the thread goes
    on passing on what such a process writes later.
    """

    def __init__(self):
        self.level = min_level()
        sys.stderr.flush()
        self.target = os.dup(2)
        self.read, write = os.pipe()
        os.set_blocking(self.read, False)
        os.dup2(write, 2)  # inheritable: a child started inside writes through the filter too
        os.close(write)
        self.wake, self.waker = os.pipe()  # close() -> the thread: this process writes no more
        self.drained = threading.Event()
        self.users = 1
        self.thread = threading.Thread(target=self._pass_on, name="edgepack-native-logs", daemon=True)
        self.thread.start()

    def _write(self, data: bytes) -> None:
        if data:
            try:
                os.write(self.target, data)
            except OSError:  # nobody reads our stderr any more: keep draining, never block the writers
                pass

    def _take(self, pending: bytes) -> tuple[bytes, bool]:
        """Every line in the pipe now passed on (or dropped): (the unfinished line, whether the pipe ended)."""
        while True:
            try:
                chunk = os.read(self.read, 65536)
            except BlockingIOError:
                return pending, False
            if not chunk:
                return pending, True
            *lines, pending = (pending + chunk).split(b"\n")
            self._write(b"".join(line + b"\n" for line in lines if not is_noise(line, self.level)))

    def _finish(self, pending: bytes) -> None:
        if not is_noise(pending, self.level):
            self._write(pending)

    def _pass_on(self) -> None:
        pending, ended = b"", False
        try:
            while not ended:
                waiting = [self.read] if self.drained.is_set() else [self.read, self.wake]
                ready, _, _ = select.select(waiting, [], [], PARTIAL_LINE_WAIT if pending else None)
                if not ready:  # a line without its newline (a prompt, last words): as it is
                    self._write(pending)
                    pending = b""
                    continue
                pending, ended = self._take(pending)
                if self.wake in ready and not self.drained.is_set():
                    self._finish(pending)
                    pending = b""
                    self.drained.set()
        finally:
            self._finish(pending)
            self.drained.set()
            for fd in (self.read, self.target, self.wake):
                os.close(fd)

    def close(self) -> None:
        sys.stderr.flush()
        os.dup2(self.target, 2)  # from here on this process writes to the old fd 2: the pipe holds all it wrote
        try:
            os.write(self.waker, b".")
        except BrokenPipeError:  # the pipe ended (no process holds it any more) and the thread is done
            pass
        os.close(self.waker)
        self.drained.wait(timeout=5)


_lock = threading.Lock()
_active: _Filter | None = None


@contextlib.contextmanager
def filtered_stderr():
    """fd 2 filtered for the block (nested and concurrent blocks share one filter); the rest of stderr on time."""
    global _active
    with _lock:
        if _active is None:
            _active = _Filter()
        else:
            _active.users += 1
        active = _active
    try:
        yield
    finally:
        with _lock:
            active.users -= 1
            if active.users == 0:
                _active = None
                active.close()


@contextlib.contextmanager
def unfiltered():
    """fd 2 as it was before any filter, for the block: for native code that may never return while it holds
    the GIL (ctypes.PyDLL, as the runtimes load a delegate), whose last words the filter's thread could not
    pass on. Nothing changes outside a filtered block."""
    with _lock:
        active = _active
    if active is None:
        yield
        return
    sys.stderr.flush()
    through_filter = os.dup(2)
    os.dup2(active.target, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(through_filter, 2)
        os.close(through_filter)
