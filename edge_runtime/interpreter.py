"""The TFLite interpreter and its delegate, chosen in exactly one place.

Runtimes, in order of preference: ``ai_edge_litert`` (the maintained one),
``tflite_runtime`` (its predecessor, still on many devices), then
``tensorflow.lite`` (a workstation with TensorFlow).
"""

from __future__ import annotations

import dataclasses
import importlib
import os

from .delegates import EDGETPU_LIBRARY, Choice, coverage, one_line, open_delegate
from .errors import UserError
from .native_logs import filtered_stderr, unfiltered

RUNTIMES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite.python.interpreter"),
)
__all__ = ["EDGETPU_LIBRARY", "Engine", "make_engine", "runtime_module"]


@dataclasses.dataclass
class Engine:
    """An interpreter ready to run, and how it was set up."""

    interpreter: object
    runtime: str
    runtime_version: str
    delegate: str  # in use: "xnnpack", "cpu" (reference kernels), "edgetpu" or "external"
    threads: int
    model_path: str = ""
    fallback: str | None = None  # why the wanted delegate is not in use (one line)
    choice: Choice | None = None  # the delegate in use, to build more engines like this one
    delegate_library: str = ""  # the external or Edge TPU library in use
    delegate_nodes: int | None = None  # original nodes the delegate took (None: not measured)
    total_nodes: int | None = None
    partitions: int | None = None

    @property
    def model_file(self) -> str:
        return os.path.basename(self.model_path)

    def summary(self) -> str:
        """One line: the delegate, its share of the graph, the model file."""
        name = f"{self.delegate} ({self.delegate_library})" if self.delegate_library else self.delegate
        share = ""
        if self.delegate_nodes is not None:
            share = (f", took {self.delegate_nodes} of {self.total_nodes} nodes in {self.partitions} "
                     f"partition{'s' * (self.partitions != 1)}")
        return f"delegate {name}{share}; model {self.model_file}"

    def report(self) -> dict:
        """What --json and the server report."""
        return {"delegate": self.delegate, "delegate_library": self.delegate_library or None,
                "delegate_nodes": self.delegate_nodes, "total_nodes": self.total_nodes,
                "partitions": self.partitions, "model_file": self.model_file, "fallback": self.fallback}


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


def _load_error(name: str, model_path: str, exc: Exception) -> UserError:
    return UserError(
        f"the {name} runtime cannot load {model_path}: {exc}",
        "the runtime may be older than the ops in the model; install the bundle's own wheels",
    )


def _interpreter(mod, model_path: str, threads: int, delegates: list, cpu: bool):
    kwargs = {"model_path": model_path, "num_threads": threads}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    if cpu:
        kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return mod.Interpreter(**kwargs)


def _allocated(name: str, interpreter, model_path: str):
    try:
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise _load_error(name, model_path, exc) from None
    return interpreter


def make_engine(model_path: str, threads: int, delegate: str | Choice = "xnnpack",
                delegate_model: str | None = None) -> Engine:
    """Create the interpreter for a model with the requested delegate.

    Args:
        model_path: the .tflite file.
        threads: CPU threads for the kernels (XNNPACK included).
        delegate: "xnnpack" (the runtime's default CPU delegate), "cpu"
            (reference kernels, no delegate), "edgetpu", or a Choice (an
            external delegate library with its options).
        delegate_model: a model to run instead of ``model_path`` only when the
            delegate loads (model_edgetpu.tflite holds an op only the Edge
            TPU runs: on the CPU the plain model runs instead).

    Returns:
        An Engine with tensors allocated. When the delegate cannot be loaded
        or applied the model runs on the CPU with XNNPACK and ``fallback``
        says why. An external or Edge TPU delegate's share of the graph is in
        ``delegate_nodes`` of ``total_nodes``; XNNPACK still takes what it
        leaves (it is applied after it, at allocation). The runtime's INFO
        lines on stderr ("Created TensorFlow Lite XNNPACK delegate for CPU.")
        are dropped; its warnings and errors pass (edge_runtime.native_logs),
        and a delegate's own lines while it loads go straight to stderr.
    """
    with filtered_stderr():
        return _engine(model_path, threads, delegate, delegate_model)


def _engine(model_path: str, threads: int, delegate: str | Choice, delegate_model: str | None) -> Engine:
    choice = delegate if isinstance(delegate, Choice) else Choice(delegate)
    name, mod = runtime_module()
    fallback = None
    if choice.name in ("edgetpu", "external"):
        with unfiltered():  # a delegate that hangs in its create call has said so first: straight to stderr
            loaded, why = open_delegate(mod, choice, os.path.dirname(os.path.abspath(model_path)))
        path = delegate_model or model_path
        if loaded is not None:
            try:
                interpreter = _interpreter(mod, path, threads, [loaded], cpu=False)
            except (ValueError, RuntimeError) as exc:
                why = f"the {name} runtime could not apply it: {one_line(exc)}"
            else:
                share = coverage(interpreter)
                library = EDGETPU_LIBRARY if choice.name == "edgetpu" else choice.library
                engine = Engine(_allocated(name, interpreter, path), name, _version(name), choice.name, threads,
                                path, None, choice, library)
                if share is not None:
                    engine.delegate_nodes, engine.total_nodes, engine.partitions = (
                        share.delegate_nodes, share.total_nodes, share.partitions)
                return engine
        fallback = f"{choice.describe()} not used: {why}; running {os.path.basename(model_path)} on the CPU with XNNPACK"
        choice = Choice("xnnpack")
    try:
        interpreter = _interpreter(mod, model_path, threads, [], cpu=choice.name == "cpu")
    except (ValueError, RuntimeError) as exc:
        raise _load_error(name, model_path, exc) from None
    engine = Engine(_allocated(name, interpreter, model_path), name, _version(name), choice.name, threads,
                    model_path, fallback, choice)
    share = coverage(interpreter)
    if share is not None:
        engine.total_nodes = share.total_nodes
        if choice.name == "xnnpack":  # the default delegate, applied at allocation: its share
            engine.delegate_nodes, engine.partitions = share.delegate_nodes, share.partitions
    return engine
