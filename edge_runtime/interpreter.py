"""The TFLite interpreter and its delegate, chosen in exactly one place.

Runtimes, in order of preference: ``ai_edge_litert`` (the maintained one),
``tflite_runtime`` (its predecessor, still on many devices), then
``tensorflow.lite`` (a workstation with TensorFlow).
"""

from __future__ import annotations

import dataclasses
import importlib

from .errors import UserError

RUNTIMES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite.python.interpreter"),
)
EDGETPU_LIBRARY = "libedgetpu.so.1"


@dataclasses.dataclass
class Engine:
    """An interpreter ready to run, and how it was set up."""

    interpreter: object
    runtime: str
    runtime_version: str
    delegate: str  # "xnnpack", "edgetpu" or "cpu" (reference kernels)
    threads: int
    model_path: str = ""
    fallback: str | None = None  # why the wanted delegate is not in use


def runtime_module():
    """The first importable TFLite runtime: (name, interpreter module)."""
    for name, module in RUNTIMES:
        try:
            return name, importlib.import_module(module)
        except ImportError:
            continue
    raise UserError(
        "no TFLite runtime found: need ai_edge_litert, tflite_runtime or tensorflow",
        "install the bundle with its install.sh, or `pip install ai-edge-litert`",
    )


def _version(name: str) -> str:
    try:
        from importlib.metadata import version

        dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(name, name)
        return version(dist)
    except Exception:  # metadata missing in odd installs; only informative
        return "unknown"


def make_engine(model_path: str, threads: int, delegate: str = "xnnpack") -> Engine:
    """Create the interpreter for a model with the requested delegate.

    Args:
        model_path: the .tflite file.
        threads: CPU threads for the kernels (XNNPACK included).
        delegate: "xnnpack" (the runtime's default CPU delegate), "cpu"
            (reference kernels, no delegate) or "edgetpu".

    Returns:
        An Engine with tensors allocated. When the Edge TPU library cannot be
        loaded the model runs on the CPU and ``fallback`` says why.
    """
    name, mod = runtime_module()
    kwargs = {"model_path": model_path, "num_threads": threads}
    fallback = None
    if delegate == "edgetpu":
        try:
            kwargs["experimental_delegates"] = [mod.load_delegate(EDGETPU_LIBRARY)]
        except (ValueError, OSError) as exc:
            fallback = f"Edge TPU delegate unavailable ({exc}); running on the CPU with XNNPACK"
            delegate = "xnnpack"
    if delegate == "cpu":
        kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = mod.Interpreter(**kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise UserError(
            f"the {name} runtime cannot load {model_path}: {exc}",
            "the runtime may be older than the ops in the model; install the bundle's own wheels",
        ) from None
    return Engine(interpreter, name, _version(name), delegate, threads, model_path, fallback)
