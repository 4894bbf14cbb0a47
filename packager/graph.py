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


@dataclasses.dataclass
class Converter:
    """The strategies tried on a graph, each float model checked against onnxruntime on the user's samples.

    Picklable (the precision ladder, in a process of its own, converts a repaired graph with it): the
    onnxruntime session is made again where it is first needed.
    """

    model: object  # the user's OnnxModel: its proto is the reference, its outputs the contract
    live_inputs: list  # the TensorSpecs still fed at run time
    shapes: dict
    calib: dict
    budget: float | None
    verbose: bool
    strategies: tuple[str, ...] | None = None  # by name; None: every strategy, in order
    work: Path | None = None  # where reconvert's attempts go
    max_memory: int | None = None  # MB (None: this machine's default, packager.convert.default_limits)
    reference: object = dataclasses.field(default=None, repr=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "reference": None}

    def check(self, saved_model):
        from .reference import Reference

        if self.reference is None:
            self.reference = Reference(self.model.proto)
        with captured_output(show=self.verbose):
            return map_tensors(saved_model, self.live_inputs, self.model.outputs, self.shapes, self.calib,
                               self.reference)

    def __call__(self, proto, work: Path, say=detail):
        from .convert.strategies import STRATEGIES

        from .convert.strategies import Limits

        chosen = {"strategies": tuple(s for s in STRATEGIES if s.name in self.strategies)} if self.strategies else {}
        limits = Limits(self.max_memory) if self.max_memory else None
        return convert(proto, work, self.calib, self.check, budget=self.budget, verbose=self.verbose, say=say,
                       limits=limits, **chosen)

    def reconvert(self, proto, name: str):
        """(another graph, a folder name) -> Conversion by these strategies, quietly (the ladder's repairs)."""
        return self(proto, self.work / name, say=lambda text: None)


def converter(source: Source, graph: Graph, samples: Samples, opts) -> Converter:
    return Converter(source.model, graph.live_inputs, source.shapes, samples.calib, opts.strategy_timeout,
                     opts.verbose, max_memory=opts.max_memory, reference=source.reference)


def convert_graph(source: Source, graph: Graph, samples: Samples, opts, work: Path):
    """Stage 5: the first strategy whose float model reproduces the ONNX model."""
    conversion = converter(source, graph, samples, opts)(graph.proto, work / "convert")
    worst = min(conversion.float_cosine.values())
    detail(f"strategy {conversion.strategy}: float model matches onnxruntime (worst cosine {worst:.6f})")
    return conversion


def same_strategy(source: Source, graph: Graph, samples: Samples, opts, work: Path, conversion) -> Converter:
    """A converter for another graph (a repaired one) by the strategy that won, working in ``work``."""
    return dataclasses.replace(converter(source, graph, samples, opts), strategies=(conversion.strategy,), work=work)
