"""Latency/memory tables of a target device: the blocks of the search space, and the predictor.

``python -m trainer.profile`` (run on the target device) measures every
building block the configured network can contain and saves them with
``LatencyTable.save``; the search loads the table (``LatencyTable.load``) and
``LatencyTable.predict`` sums the entries over the blocks an architecture's
network actually has, instead of timing the network on the trainer's device.

Blocks (one table entry each, keyed by what they compute, so a block that
occurs in several places of the network is measured once):

* ``stem``: the 3x3 stem conv;
* ``compress``: a source node's BN-ReLU -> 1x1 conv (C_in -> n) -> BN-ReLU;
* ``op``: an op at n channels on an H x W input with stride 1 or 2;
* ``bnrelu``: the BN-ReLU of a node with predecessors;
* ``add``: one addition of two node outputs (a node with k predecessors
  runs k - 1 of them);
* ``project``: the concatenation of k free ends + the 1x1 conv to C_out
  (no concatenation for k = 1);
* ``head``: BN-ReLU -> global average pool -> (dropout) -> fully connected.

A table made with ``--search_space FILE.json`` covers every scale of that
file (``scale_configs``: each combination of its width_mult, depth,
resolution and dropout choices; ``settings["scales"]``); predicting a network
at a scale it lacks raises ``MissingEntry`` naming the scale.

Latency prediction: ``scale * sum(block medians) + offset_ms``, with
``scale``/``offset_ms`` measured by the profiler on whole networks (see
docs/latency_table.md). Memory prediction: the parameters of every block +
the input + the peak of a walk along the forward pass that keeps the
tensors alive exactly as ``trainer.network`` does and adds each block's
measured allocator peak (output + scratch) at the moment it runs.

Nothing here needs Paddle; the blocks are the steps of ``trainer.walk``, the
walk ``trainer.network`` builds and ``trainer.metrics.count`` counts.
"""
import copy
import dataclasses
import itertools
import json
import math
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from autodl_design.arch import Architecture
from autodl_design.interfaces import Decision
from autodl_design.records import atomic_write_text
from autodl_design.config import TrainerConfig
from autodl_design.recipe import SCALE_DECISIONS, Recipe
from trainer.metrics import count, memory_estimate_mb
from trainer.walk import (ADD, BNRELU, COMPRESS, HEAD, OP, PROJECT, STEM, CellShape, Step,
                          cell_shapes, input_shape, op_output, walk)

FORMAT = "autodl-design-latency-table/1"
MIB = float(1 << 20)
# Network settings a table is only valid for (compared exactly with the search's).
SETTING_KEYS = ("width", "num_stages", "num_cells", "ratio", "dropout", "latency_batch",
                "image_shape", "num_classes")
# The settings a search-space file may vary (one "scale" of a table made with
# --search_space): width, cells per stage, input shape, and the head's dropout.
SCALE_KEYS = ("width", "num_cells", "image_shape", "dropout")
# The recipe decisions that change blocks of the network (the others only train).
TABLE_DECISIONS = SCALE_DECISIONS + ("dropout",)


class MissingEntry(ValueError):
    """A block of the network is not in the table (the table was made for other settings)."""


@dataclasses.dataclass(frozen=True)
class Block:
    """One measurable building block.

    Attributes:
      key: the table key, e.g. ``op conv_5x5 n=4 28x28 s=2``.
      kind: stem, compress, op, bnrelu, add, project or head (``trainer.walk``).
      text: where it occurs, for error messages.
      step: the ``trainer.walk.Step`` it measures (what the profiler builds).
      dropout: the head's dropout (0.0 for other kinds).
    """
    key: str
    kind: str
    text: str
    step: Step
    dropout: float = 0.0


def _hw(hw: Tuple[int, int]) -> str:
    return "%dx%d" % hw


def block_of(step: Step, dropout: float = 0.0) -> Block:
    """The table block of one ``trainer.walk`` step (``dropout``: the head's)."""
    size, g = _hw(step.in_hw), step.cell
    if step.kind == STEM:
        return Block("stem %d->%d %s" % (step.cin, step.cout, size), STEM,
                     "the stem (3x3 conv, %d -> %d channels, %s)" % (step.cin, step.cout, size),
                     step)
    if step.kind == COMPRESS:
        return Block("compress %d->%d %s" % (step.cin, step.cout, size), COMPRESS,
                     "the 1x1 compression (%d -> %d channels, %s) of a source node in the %s"
                     % (step.cin, step.cout, size, g.where), step)
    if step.kind == OP:
        return Block("op %s n=%d %s s=%d" % (step.op, step.cin, size, step.stride), OP,
                     "%s in the %s at %d channels, %s, stride %d"
                     % (step.op, g.where, step.cin, size, step.stride), step)
    if step.kind == BNRELU:
        return Block("bnrelu n=%d %s" % (step.cin, size), BNRELU,
                     "the BN-ReLU of a node with predecessors in the %s at %d channels, %s"
                     % (g.where, step.cin, size), step)
    if step.kind == ADD:
        return Block("add n=%d %s" % (step.cin, size), ADD, "the node sum in the %s at %d "
                     "channels, %s" % (g.where, step.cin, size), step)
    if step.kind == PROJECT:
        k = len(step.inputs)
        return Block("project %dx%d->%d %s" % (k, g.n, step.cout, size), PROJECT,
                     "the concatenation of %d free ends + 1x1 conv (%d x %d -> %d channels, %s) "
                     "in the %s" % (k, k, g.n, step.cout, size, g.where), step)
    if step.kind == HEAD:
        return Block("head %d %s classes=%d dropout=%g" % (step.cin, size, step.cout, dropout),
                     HEAD, "the head (%d channels, %s, %d classes, dropout %g)"
                     % (step.cin, size, step.cout, dropout), step, float(dropout))
    raise ValueError("a %s step has no table block" % step.kind)


def settings_of(config: TrainerConfig, image_shape: Sequence[int], num_classes: int) -> Dict:
    """The settings a table is valid for (``SETTING_KEYS``; the input shape at the resolution)."""
    return {"width": int(config.width), "num_stages": int(config.num_stages),
            "num_cells": int(config.num_cells), "ratio": int(config.ratio),
            "dropout": float(config.dropout), "latency_batch": int(config.latency_batch),
            "image_shape": list(input_shape(config, image_shape)),
            "num_classes": int(num_classes)}


def scale_configs(config: TrainerConfig, decisions: Sequence[Decision] = ()
                  ) -> List[TrainerConfig]:
    """``config`` at every scale of a search space: one per combination of its table decisions.

    Args:
      config: the search's trainer settings.
      decisions: the search-space file's decisions (``recipe.parse_decisions``);
        only ``TABLE_DECISIONS`` (width_mult, depth, resolution, dropout) are
        used, the training decisions change no block.

    Returns:
      ``Recipe.apply(config)`` for every combination, in the file's order
      ([config] without table decisions).
    """
    table = [d for d in decisions if d.name in TABLE_DECISIONS]
    return [Recipe(tuple((d.name, v) for d, v in zip(table, values))).apply(config)
            for values in itertools.product(*(d.choices for d in table))]


def scale_of(config: TrainerConfig, image_shape: Sequence[int]) -> Dict:
    """The ``SCALE_KEYS`` settings of ``config`` (one entry of a table's ``scales``)."""
    return {"width": int(config.width), "num_cells": int(config.num_cells),
            "image_shape": list(input_shape(config, image_shape)),
            "dropout": float(config.dropout)}


def describe_scale(scale: Dict) -> str:
    """E.g. ``width 6, 2 cells per stage, input 1x16x16, dropout 0``."""
    return "width %d, %d cells per stage, input %s, dropout %g" % (
        scale["width"], scale["num_cells"], "x".join(map(str, scale["image_shape"])),
        scale["dropout"])


def _cell_space_steps(g: CellShape, ops: Sequence[str], num_nodes: int) -> List[Step]:
    """Every step a cell of shape ``g`` can contain, for any cell of the space."""
    steps = [Step(COMPRESS, g.cin, g.n, g.in_hw, g.in_hw, cell=g)]
    steps += [Step(OP, g.n, g.n, g.in_hw, op_output(name, g.in_hw, g.stride), g.stride, name, g)
              for name in ops]
    if num_nodes >= 2:
        steps.append(Step(BNRELU, g.n, g.n, g.out_hw, g.out_hw, cell=g))
        steps += [Step(OP, g.n, g.n, g.out_hw, op_output(name, g.out_hw, 1), 1, name, g)
                  for name in ops]
    if num_nodes >= 3:
        steps.append(Step(ADD, g.n, g.n, g.out_hw, g.out_hw, cell=g))
    steps += [Step(PROJECT, k * g.n, g.cout, g.out_hw, g.out_hw, cell=g,
                   inputs=tuple(range(k))) for k in range(1, num_nodes + 1)]
    return steps


def space_blocks(config: TrainerConfig, ops: Sequence[str], num_nodes: int,
                 image_shape: Sequence[int], num_classes: int) -> List[Block]:
    """Every distinct block a network of the search space can contain, in forward order.

    Args:
      config: network sizes.
      ops: the op names the search chooses from.
      num_nodes: nodes per cell (bounds the number of concatenated free ends
        and of a node's predecessors).
      image_shape: (C, H, W).
      num_classes: classifier outputs.
    """
    c, h, w = input_shape(config, image_shape)
    shapes = cell_shapes(config, image_shape)
    steps = [Step(STEM, c, config.width, (h, w), (h, w))]
    for g in shapes:
        steps += _cell_space_steps(g, ops, num_nodes)
    steps.append(Step(HEAD, shapes[-1].cout, int(num_classes), shapes[-1].out_hw, (1, 1)))
    found: Dict[str, Block] = {}
    for step in steps:
        block = block_of(step, config.dropout)
        found.setdefault(block.key, block)
    return list(found.values())


def scaled_space_blocks(config: TrainerConfig, decisions: Sequence[Decision],
                        ops: Sequence[str], num_nodes: int, image_shape: Sequence[int],
                        num_classes: int) -> List[Block]:
    """``space_blocks`` of every scale of ``decisions`` (``scale_configs``), each block once."""
    found: Dict[str, Block] = {}
    for c in scale_configs(config, decisions):
        for block in space_blocks(c, ops, num_nodes, image_shape, num_classes):
            found.setdefault(block.key, block)
    return list(found.values())


def shape_key(shape: Sequence[int]) -> str:
    """``CxHxW`` of an input shape (the key of ``memory["input_bytes_by_shape"]``)."""
    return "x".join(str(int(s)) for s in shape)


class _Liveness:
    """Sums block latencies and follows the live activation bytes along a walk.

    Liveness follows ``trainer.network`` exactly: the caller holds the input;
    a cell's input lives until the cell returns; all node outputs of a cell
    live until it returns; a node's sum (its ``h``) lives until the next node
    starts (or, for the last node, until the concatenation is done; with one
    free end, until the projection starts); an op's input (the BN-ReLU or
    compression output) lives while the op runs.
    """

    def __init__(self, entry: Callable[[Block], Dict], input_bytes: int):
        self.entry = entry
        self.total_ms = 0.0
        self.params = 0.0
        self.have_memory = True
        self.peak = 0.0
        self.live = float(input_bytes)       # the caller holds the input batch
        self.cell_in = 0.0                   # the current cell's input
        self.nodes = 0.0                     # outputs of this cell's nodes so far
        self.temp = 0.0                      # the current node's sum, held by its h
        self.pre_out = 0.0                   # the current op's input
        self.at_node = (None, -1)            # (cell, node) of the last step

    def run(self, block: Block, times: int = 1) -> Dict:
        e = self.entry(block)
        self.total_ms += times * float(e["latency_ms"])
        if "peak_bytes" not in e:
            self.have_memory = False
        return e

    def at(self, live: float, e: Dict, field: str = "peak_bytes"):
        if self.have_memory:
            self.peak = max(self.peak, live + float(e[field]))

    def param(self, e: Dict):
        self.params += float(e.get("param_bytes", 0.0))

    def step(self, step: Step, block: Block):
        """Accounts for one step of the forward pass."""
        if step.cell is not None and step.cell != self.at_node[0]:
            self.nodes = 0.0
        if step.node >= 0 and (step.cell, step.node) != self.at_node:
            self.temp = 0.0                  # h = x or nodes[preds[0]] frees the old sum
            self.at_node = (step.cell, step.node)
        if step.kind == ADD:
            e = self.run(block, len(step.inputs) - 1)
            for _ in step.inputs[1:]:
                self.at(self.live + self.nodes + self.temp, e)
                self.temp = _out(e)
            return
        e = self.run(block)
        self.param(e)
        if step.kind in (STEM, HEAD):
            self.at(self.live, e)
        if step.kind == STEM:
            self.cell_in = _out(e)
            self.live += self.cell_in
        elif step.kind in (COMPRESS, BNRELU):
            self.at(self.live + self.nodes + self.temp, e)
            self.pre_out = _out(e)
        elif step.kind == OP:
            self.at(self.live + self.nodes + self.temp + self.pre_out, e)
            self.nodes += _out(e)
        elif step.kind == PROJECT:
            if len(step.inputs) > 1:        # the sum is freed after the concatenation
                self.at(self.live + self.nodes + self.temp, e, "concat_bytes")
            self.at(self.live + self.nodes, e)
            self.live += _out(e) - self.cell_in      # the cell's input is released
            self.cell_in = _out(e)
            self.at_node = (step.cell, -1)


def _out(e: Dict) -> float:
    return float(e.get("out_bytes", 0.0))


def sum_blocks(arch: Architecture, config: TrainerConfig, image_shape: Sequence[int],
               num_classes: int, entry: Callable[[Block], Dict], input_bytes: int = 0
               ) -> Tuple[float, Optional[float], float]:
    """Walks the forward pass of ``arch``'s network block by block (``trainer.walk``).

    Args:
      entry: block -> its table entry (``latency_ms``, and for memory
        ``out_bytes``, ``peak_bytes``, ``param_bytes``, ``concat_bytes``);
        raises ``MissingEntry`` for a block it does not have.
      input_bytes: bytes of the input batch.

    Returns:
      (sum of block latencies in ms, peak activation bytes above the
      parameters incl. the input or None if entries lack memory figures,
      parameter bytes); liveness as ``_Liveness`` describes.
    """
    state = _Liveness(entry, input_bytes)
    for step in walk(arch, config, image_shape, num_classes):
        state.step(step, block_of(step, config.dropout))
    return state.total_ms, (state.peak if state.have_memory else None), state.params


def _one_line(text) -> str:
    return " ".join(str(text).split())


class LatencyTable:
    """A profiled table: device description, settings, calibration and block entries.

    Attributes:
      path: where it was loaded from ("" if built in memory).
      device: dict with ``description`` (and cpu_model, threads, paddle_version,
        device, date).
      settings: ``settings_of(...)`` plus ``ops`` and ``num_nodes`` profiled.
      calibration: dict with ``scale`` and ``offset_ms`` (latency = scale *
        block sum + offset_ms) and the whole-network measurements it came from.
      memory: dict with ``source`` (allocator name, or "" if the device had no
        allocator statistics) and ``input_bytes``.
      entries: block key -> dict(latency_ms, [out_bytes, peak_bytes,
        param_bytes, concat_bytes], ...).
    """

    def __init__(self, device: Dict, settings: Dict, calibration: Dict, memory: Dict,
                 entries: Dict[str, Dict], path: str = ""):
        self.device = device
        self.settings = settings
        self.calibration = calibration
        self.memory = memory
        self.entries = entries
        self.path = path

    # ------------------------------------------------------------------ files

    def to_dict(self) -> Dict:
        """A JSON-ready copy (changing it leaves the table alone)."""
        return copy.deepcopy({"format": FORMAT, "device": self.device,
                              "settings": self.settings, "calibration": self.calibration,
                              "memory": self.memory, "entries": self.entries})

    def save(self, path: str):
        """Writes the table as JSON (atomically: temp file, then ``os.replace``)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str) -> "LatencyTable":
        """Reads a table written by ``save``.

        Raises:
          ValueError: one line naming the file and the problem (missing, not
            JSON, not a latency table, a malformed field).
        """
        try:
            with open(path, "r", encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError:
            raise ValueError("%s: no such latency table (make one on the target device with "
                             "python -m trainer.profile --output %s)" % (path, path)) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError("%s: cannot be read (%s)" % (path, _one_line(e))) from None
        except json.JSONDecodeError as e:
            raise ValueError("%s: not valid JSON (%s at line %d)" % (path, e.msg, e.lineno)) \
                from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError("%s: format %r is not %r (not made by python -m trainer.profile)"
                             % (path, found, FORMAT))
        for key in ("device", "settings", "calibration", "memory", "entries"):
            if not isinstance(d.get(key), dict):
                raise ValueError("%s: field %r is missing or not an object" % (path, key))
        missing = [k for k in SETTING_KEYS if k not in d["settings"]]
        if missing:
            raise ValueError("%s: settings lack %s" % (path, ", ".join(missing)))
        for key in ("scale", "offset_ms"):
            if not isinstance(d["calibration"].get(key), (int, float)):
                raise ValueError("%s: calibration.%s is missing or not a number" % (path, key))
        for key, e in d["entries"].items():
            v = e.get("latency_ms") if isinstance(e, dict) else None
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError("%s: entry %r has no valid latency_ms" % (path, key))
        return cls(d["device"], d["settings"], d["calibration"], d["memory"], d["entries"],
                   path=path)

    # ------------------------------------------------------------------ checks

    @property
    def name(self) -> str:
        return os.path.basename(self.path) if self.path else "<table>"

    @property
    def source(self) -> str:
        """``table:<file> (<device description>)`` for the metrics' ``latency_source``."""
        return "table:%s (%s)" % (self.name, self.device.get("description", "unknown device"))

    def check_settings(self, config: TrainerConfig, image_shape: Sequence[int],
                       num_classes: int):
        """Raises ValueError naming the first setting that differs from the table's.

        A table made with a search-space file (``settings["scales"]``) accepts
        each of its scales (``SCALE_KEYS``) instead of its base settings; another
        scale raises ``MissingEntry`` naming it.
        """
        want = settings_of(config, image_shape, num_classes)
        scales = self.settings.get("scales")
        if scales:
            self._check_scale(scale_of(config, image_shape), scales)
        for key in SETTING_KEYS:
            if scales and key in SCALE_KEYS:
                continue
            have = self.settings[key]
            if key == "image_shape":
                have = [int(s) for s in have]
            if have != want[key]:
                show = (lambda v: "x".join(map(str, v))) if key == "image_shape" else str
                raise ValueError(
                    "%s was profiled with %s %s but the search uses %s %s: profile again with "
                    "the search's settings (python -m trainer.profile)"
                    % (self.name, key, show(have), key, show(want[key])))

    def _check_scale(self, want: Dict, scales: Sequence[Dict]):
        """Raises MissingEntry if ``want`` (``scale_of``) is not one of the table's scales."""
        norm = [{k: (list(map(int, s[k])) if k == "image_shape" else s[k]) for k in SCALE_KEYS}
                for s in scales]
        if want not in norm:
            raise MissingEntry(
                "%s has no entries for the scale %s (it covers %d scales of %s): profile again "
                "with python -m trainer.profile --search_space FILE listing that scale"
                % (self.name, describe_scale(want), len(scales),
                   json.dumps(self.settings.get("search_space", {}), sort_keys=True)))

    def check_space(self, config: TrainerConfig, ops: Sequence[str], num_nodes: int,
                    image_shape: Sequence[int], num_classes: int,
                    decisions: Sequence[Decision] = ()):
        """Settings match and every block of the search space has an entry.

        Args:
          decisions: the search-space file's decisions; every scale they
            produce (``scale_configs``) must be covered.

        Raises:
          ValueError: a differing setting.
          MissingEntry: the first scale or block of the space the table lacks.
        """
        for c in scale_configs(config, decisions):
            self.check_settings(c, image_shape, num_classes)
            for block in space_blocks(c, ops, num_nodes, image_shape, num_classes):
                self.entry(block)

    def entry(self, block: Block) -> Dict:
        """The entry of ``block``; raises ``MissingEntry`` naming it if absent."""
        e = self.entries.get(block.key)
        if e is None:
            raise MissingEntry("%s is not in %s: profile with the search's settings "
                               "(python -m trainer.profile)" % (block.text, self.name))
        return e

    # ------------------------------------------------------------------ prediction

    def block_sum(self, arch: Architecture, config: TrainerConfig,
                  image_shape: Sequence[int], num_classes: int) -> float:
        """Sum of the block latencies (ms) of ``arch``'s network, before calibration."""
        return sum_blocks(arch, config, image_shape, num_classes, self.entry)[0]

    def walk(self, arch: Architecture, config: TrainerConfig, image_shape: Sequence[int],
             num_classes: int) -> Tuple[float, Optional[float], float]:
        """``sum_blocks`` of ``arch`` over this table's entries and input bytes.

        The input bytes are those measured at the network's input shape
        (``memory["input_bytes_by_shape"]``, tables with scales) or the base
        ``memory["input_bytes"]``.
        """
        by_shape = self.memory.get("input_bytes_by_shape", {})
        input_bytes = by_shape.get(shape_key(input_shape(config, image_shape)),
                                   self.memory.get("input_bytes", 0))
        return sum_blocks(arch, config, image_shape, num_classes, self.entry, int(input_bytes))

    def predict(self, arch: Architecture, config: TrainerConfig, image_shape: Sequence[int],
                num_classes: int) -> Dict:
        """Predicted latency and peak memory of ``arch``'s network on the table's device.

        Args:
          arch: the architecture.
          config: network sizes (must match the table's settings).
          image_shape: (C, H, W).
          num_classes: classifier outputs.

        Returns:
          dict: latency_ms (float, ``scale * block sum + offset_ms``), memory_mb
          (float: parameter + input + peak activation bytes, MiB), memory_source
          ('table:<allocator>', or 'estimate' when the table has no memory
          figures), latency_source ('table:<file> (<device>)'), latency_batch.

        Raises:
          ValueError: settings differ from the table's.
          MissingEntry: a block of this network is not in the table.
        """
        self.check_settings(config, image_shape, num_classes)
        blocks_ms, peak, param_bytes = self.walk(arch, config, image_shape, num_classes)
        latency = float(self.calibration["scale"]) * blocks_ms + float(
            self.calibration["offset_ms"])
        if peak is not None and self.memory.get("source"):
            memory_mb = (param_bytes + peak) / MIB
            memory_source = "table:%s" % self.memory["source"]
        else:
            memory_mb = memory_estimate_mb(count(arch, config, image_shape, num_classes),
                                           config.latency_batch)
            memory_source = "estimate"
        return {"latency_ms": latency, "memory_mb": float(memory_mb),
                "memory_source": memory_source, "latency_source": self.source,
                "latency_batch": int(config.latency_batch)}
