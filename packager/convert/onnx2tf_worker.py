"""Runs onnx2tf in its own process, with the network cut off.

onnx2tf sets environment variables and global state on import and prints a
wall of logs; a child process keeps all that out of edgepack, and lets the
build kill an attempt that runs past its time budget. Any attempt to open a
network connection fails loudly instead of hanging or fetching.

    python -m packager.convert.onnx2tf_worker MODEL.onnx OUT_DIR [OPTIONS_JSON] [--verbose]

OPTIONS_JSON is a JSON object of extra keyword arguments for
``onnx2tf.convert`` (a conversion strategy's options).
"""

import json
import socket
import sys

from edge_runtime.native_logs import quiet_process


class NetworkBlocked(RuntimeError):
    pass


def _no_network(*args, **kwargs):
    raise NetworkBlocked(f"edgepack runs offline; the converter tried to connect to {args[1:2] or args}")


def block_network() -> None:
    """Make every outgoing connection in this process fail at once."""
    socket.socket.connect = _no_network
    socket.socket.connect_ex = _no_network
    socket.create_connection = _no_network


def main(argv: list[str]) -> int:
    verbose = "--verbose" in argv
    args = [a for a in argv if a != "--verbose"]
    model, out_dir = args[0], args[1]
    options = json.loads(args[2]) if len(args) > 2 else {}
    block_network()
    if not verbose:  # before onnx2tf imports TensorFlow
        quiet_process()

    import onnx2tf

    onnx2tf.convert(
        input_onnx_file_path=model,
        output_folder_path=out_dir,
        output_signaturedefs=True,
        non_verbose=not verbose,
        **options,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
