"""Stages 4–5 of `edgepack build`: the graph prepared, then converted to a float model.

Configuration inputs constant over every sample are frozen into the graph
first (packager.inputs.config); the prepare passes run and are
checked against the user's model; then the conversion strategies are tried
(packager.convert), each checked against onnxruntime.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from .convert import convert
from .inputs.config import constant_config_inputs, freeze
from .layout import map_tensors
from .prepare import prepare
from .quiet import captured_output
from .report import detail, show_preparation
from .source import Samples, Source


@dataclasses.dataclass
class Graph:
    """The prepared graph, and what preparing it settled."""

    proto: object  # onnx.ModelProto, prepared
    preparation: object  # packager.prepare.Preparation
    frozen: dict  # {input name: value} fixed configuration inputs
    live_inputs: list  # the TensorSpecs still fed at run time
    fixed_entries: list[dict]  # the manifest's fixed_inputs


def prepare_graph(source: Source, samples: Samples, verbose: bool) -> Graph:
    """Stage 4: configuration inputs frozen, the prepare passes run (their changes shown)."""
    proto = copy.deepcopy(source.fixed)
    inputs = source.model.inputs
    frozen = constant_config_inputs(proto, inputs, samples.calib, samples.holdout)
    frozen_notes = freeze(proto, frozen)
    with captured_output(show=verbose):  # onnxsim's warnings
        preparation = prepare(proto, samples.calib, reference=source.reference.outputs)
    preparation.changes[:0] = [f"image_input: {n}" for n in source.notes] + [
        f"config_inputs: {n}" for n in frozen_notes]
    show_preparation(preparation)
    entries = [{"name": s.name, "shape": source.shapes[s.name], "dtype": s.dtype, "value": frozen[s.name].tolist()}
               for s in inputs if s.name in frozen]
    return Graph(proto, preparation, frozen, [s for s in inputs if s.name not in frozen], entries)


def converter(source: Source, graph: Graph, samples: Samples, opts):
    """(proto, work folder) -> Conversion: the strategies tried on ``proto``, each checked against onnxruntime."""

    def check(saved_model):
        with captured_output(show=opts.verbose):
            return map_tensors(saved_model, graph.live_inputs, source.model.outputs, source.shapes, samples.calib,
                               source.reference)

    def run(proto, work: Path, strategies=None, say=detail):
        extra = {"strategies": strategies} if strategies is not None else {}
        return convert(proto, work, samples.calib, check, budget=opts.strategy_timeout, verbose=opts.verbose,
                       say=say, **extra)

    return run


def convert_graph(source: Source, graph: Graph, samples: Samples, opts, work: Path):
    """Stage 5: the first strategy whose float model reproduces the ONNX model."""
    conversion = converter(source, graph, samples, opts)(graph.proto, work / "convert")
    worst = min(conversion.float_cosine.values())
    detail(f"strategy {conversion.strategy}: float model matches onnxruntime (worst cosine {worst:.6f})")
    return conversion


def same_strategy(source: Source, graph: Graph, samples: Samples, opts, work: Path, conversion):
    """(proto, name) -> Conversion: another graph (a repaired one) converted by the strategy that won."""
    from .convert.strategies import STRATEGIES

    run = converter(source, graph, samples, opts)
    chosen = tuple(s for s in STRATEGIES if s.name == conversion.strategy)
    return lambda proto, name: run(proto, work / name, strategies=chosen, say=lambda text: None)
