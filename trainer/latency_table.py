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

Latency prediction: ``scale * sum(block medians) + offset_ms``, with
``scale``/``offset_ms`` measured by the profiler on whole networks (see
docs/latency_table.md). Memory prediction: the parameters of every block +
the input + the peak of a walk along the forward pass that keeps the
tensors alive exactly as ``trainer.network`` does and adds each block's
measured allocator peak (output + scratch) at the moment it runs.

Nothing here needs Paddle; the network geometry comes from the same helpers
as ``trainer.network`` and ``trainer.metrics.count``.
"""
import copy
import dataclasses
import json
import math
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from autodl_design.arch import Architecture
from autodl_design.records import atomic_write_text
from autodl_design.config import TrainerConfig
from autodl_design.ops import OPS

FORMAT = "autodl-design-latency-table/1"
MIB = float(1 << 20)
# Network settings a table is only valid for (compared exactly with the search's).
SETTING_KEYS = ("width", "num_stages", "num_cells", "ratio", "dropout", "latency_batch",
                "image_shape", "num_classes")


class MissingEntry(ValueError):
    """A block of the network is not in the table (the table was made for other settings)."""


@dataclasses.dataclass(frozen=True)
class Block:
    """One measurable building block.

    Attributes:
      key: the table key, e.g. ``op conv_5x5 n=4 28x28 s=2``.
      kind: stem, compress, op, bnrelu, add, project or head.
      text: where it occurs, for error messages.
      args: what the profiler needs to build it (ints, strings, tuples).
    """
    key: str
    kind: str
    text: str
    args: Tuple = ()


def _hw(h: int, w: int) -> str:
    return "%dx%d" % (h, w)


def stem_block(cin: int, cout: int, h: int, w: int) -> Block:
    return Block("stem %d->%d %s" % (cin, cout, _hw(h, w)), "stem",
                 "the stem (3x3 conv, %d -> %d channels, %s)" % (cin, cout, _hw(h, w)),
                 (cin, cout, h, w))


def compress_block(cin: int, n: int, h: int, w: int, where: str) -> Block:
    return Block("compress %d->%d %s" % (cin, n, _hw(h, w)), "compress",
                 "the 1x1 compression (%d -> %d channels, %s) of a source node in the %s"
                 % (cin, n, _hw(h, w), where), (cin, n, h, w))


def op_block(name: str, n: int, h: int, w: int, stride: int, where: str) -> Block:
    return Block("op %s n=%d %s s=%d" % (name, n, _hw(h, w), stride), "op",
                 "%s in the %s at %d channels, %s, stride %d" % (name, where, n, _hw(h, w),
                                                                 stride),
                 (name, n, h, w, stride))


def bnrelu_block(n: int, h: int, w: int, where: str) -> Block:
    return Block("bnrelu n=%d %s" % (n, _hw(h, w)), "bnrelu",
                 "the BN-ReLU of a node with predecessors in the %s at %d channels, %s"
                 % (where, n, _hw(h, w)), (n, h, w))


def add_block(n: int, h: int, w: int, where: str) -> Block:
    return Block("add n=%d %s" % (n, _hw(h, w)), "add",
                 "the node sum in the %s at %d channels, %s" % (where, n, _hw(h, w)), (n, h, w))


def project_block(k: int, n: int, cout: int, h: int, w: int, where: str) -> Block:
    return Block("project %dx%d->%d %s" % (k, n, cout, _hw(h, w)), "project",
                 "the concatenation of %d free ends + 1x1 conv (%d x %d -> %d channels, %s) "
                 "in the %s" % (k, k, n, cout, _hw(h, w), where), (k, n, cout, h, w))


def head_block(c: int, h: int, w: int, num_classes: int, dropout: float) -> Block:
    return Block("head %d %s classes=%d dropout=%g" % (c, _hw(h, w), num_classes, dropout),
                 "head", "the head (%d channels, %s, %d classes, dropout %g)"
                 % (c, _hw(h, w), num_classes, dropout), (c, h, w, num_classes, float(dropout)))


@dataclasses.dataclass(frozen=True)
class CellGeometry:
    """Sizes of one cell of the network (as ``trainer.network.cell_plan`` lays it out)."""
    index: int
    reduction: bool
    cin: int
    cout: int
    n: int            # channels of every node
    in_hw: Tuple[int, int]
    out_hw: Tuple[int, int]

    @property
    def where(self) -> str:
        return "%s cell %d (%d -> %d channels)" % (
            "reduction" if self.reduction else "normal", self.index, self.cin, self.cout)

    @property
    def stride(self) -> int:
        return 2 if self.reduction else 1


def op_output(name: str, h: int, w: int, stride: int) -> Tuple[int, int]:
    """Output H x W of op ``name`` (same padding), as ``trainer.metrics`` computes it."""
    from trainer.metrics import _conv_out
    spec = OPS[name]
    kh, kw = spec.kernel
    dilation = spec.dilation if spec.kind == "conv" else 1
    return _conv_out(h, kh, stride, dilation), _conv_out(w, kw, stride, dilation)


def cell_geometry(config: TrainerConfig, image_shape: Sequence[int]) -> List[CellGeometry]:
    """Every cell's channels and sizes, from ``trainer.network.cell_plan``."""
    from trainer.network import cell_plan, node_channels
    _, h, w = (int(s) for s in image_shape)
    cells = []
    for i, (reduction, cin, cout) in enumerate(cell_plan(config)):
        stride = 2 if reduction else 1
        out = op_output("conv_3x3", h, w, stride)   # every op: H or ceil(H / 2)
        cells.append(CellGeometry(i, reduction, cin, cout, node_channels(cout, config.ratio),
                                  (h, w), out))
        h, w = out
    return cells


def settings_of(config: TrainerConfig, image_shape: Sequence[int], num_classes: int) -> Dict:
    """The settings a table is valid for (``SETTING_KEYS``)."""
    return {"width": int(config.width), "num_stages": int(config.num_stages),
            "num_cells": int(config.num_cells), "ratio": int(config.ratio),
            "dropout": float(config.dropout), "latency_batch": int(config.latency_batch),
            "image_shape": [int(s) for s in image_shape], "num_classes": int(num_classes)}


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
    c, h, w = (int(s) for s in image_shape)
    found: Dict[str, Block] = {}

    def add(block: Block):
        found.setdefault(block.key, block)

    add(stem_block(c, config.width, h, w))
    for g in cell_geometry(config, image_shape):
        (hi, wi), (ho, wo) = g.in_hw, g.out_hw
        add(compress_block(g.cin, g.n, hi, wi, g.where))
        for name in ops:
            add(op_block(name, g.n, hi, wi, g.stride, g.where))
        if num_nodes >= 2:
            add(bnrelu_block(g.n, ho, wo, g.where))
            for name in ops:
                add(op_block(name, g.n, ho, wo, 1, g.where))
        if num_nodes >= 3:
            add(add_block(g.n, ho, wo, g.where))
        for k in range(1, num_nodes + 1):
            add(project_block(k, g.n, g.cout, ho, wo, g.where))
    last = cell_geometry(config, image_shape)[-1]
    add(head_block(last.cout, last.out_hw[0], last.out_hw[1], num_classes, config.dropout))
    return list(found.values())


def walk(arch: Architecture, config: TrainerConfig, image_shape: Sequence[int],
         num_classes: int, entry: Callable[[Block], Dict], input_bytes: int = 0
         ) -> Tuple[float, Optional[float], float]:
    """Walks the forward pass of ``arch``'s network block by block.

    Liveness follows ``trainer.network`` exactly: the caller holds the input;
    a cell's input lives until the cell returns; all node outputs of a cell
    live until it returns; a node's sum (its ``h``) lives until the next node
    starts (or, for the last node, until the concatenation is done; with one
    free end, until the projection starts); an op's input (the BN-ReLU or
    compression output) lives while the op runs.

    Args:
      entry: block -> its table entry (``latency_ms``, and for memory
        ``out_bytes``, ``peak_bytes``, ``param_bytes``, ``concat_bytes``);
        raises ``MissingEntry`` for a block it does not have.
      input_bytes: bytes of the input batch.

    Returns:
      (sum of block latencies in ms, peak activation bytes above the
      parameters incl. the input or None if entries lack memory figures,
      parameter bytes).
    """
    c, h, w = (int(s) for s in image_shape)
    total_ms = 0.0
    params = 0.0
    have_memory = True
    peak = 0.0

    def run(block: Block, times: int = 1) -> Dict:
        nonlocal total_ms, have_memory
        e = entry(block)
        total_ms += times * float(e["latency_ms"])
        if "peak_bytes" not in e:
            have_memory = False
        return e

    def at(live: float, e: Dict, field: str = "peak_bytes"):
        nonlocal peak
        if have_memory:
            peak = max(peak, live + float(e[field]))

    def out(e: Dict) -> float:
        return float(e.get("out_bytes", 0.0))

    def param(e: Dict):
        nonlocal params
        params += float(e.get("param_bytes", 0.0))

    live = float(input_bytes)                       # the caller holds the input batch
    e = run(stem_block(c, config.width, h, w))
    param(e)
    at(live, e)
    cell_in = out(e)
    live += cell_in
    for g in cell_geometry(config, image_shape):
        cell = arch.reduction if g.reduction else arch.normal
        (hi, wi) = g.in_hw
        nodes = 0.0                                  # outputs of this cell's nodes so far
        temp = 0.0                                   # the last node's sum, held by its h
        sizes: List[Tuple[int, int]] = []
        for j, name in enumerate(cell.ops):
            preds = cell.predecessors(j)
            if preds:
                hj, wj = sizes[preds[0]]
                temp = 0.0                           # h = nodes[preds[0]] frees the old sum
                if len(preds) > 1:
                    e = run(add_block(g.n, hj, wj, g.where), len(preds) - 1)
                    for _ in preds[1:]:
                        at(live + nodes + temp, e)
                        temp = out(e)
                e = run(bnrelu_block(g.n, hj, wj, g.where))
                param(e)
                at(live + nodes + temp, e)
                pre_out = out(e)
                e = run(op_block(name, g.n, hj, wj, 1, g.where))
                size = op_output(name, hj, wj, 1)
            else:
                temp = 0.0                           # h = x frees the old sum
                e = run(compress_block(g.cin, g.n, hi, wi, g.where))
                param(e)
                at(live + nodes, e)
                pre_out = out(e)
                e = run(op_block(name, g.n, hi, wi, g.stride, g.where))
                size = op_output(name, hi, wi, g.stride)
            param(e)
            at(live + nodes + temp + pre_out, e)
            nodes += out(e)
            sizes.append(size)
        k = len(cell.output_nodes())
        ho, wo = sizes[0]
        e = run(project_block(k, g.n, g.cout, ho, wo, g.where))
        param(e)
        if k > 1:
            at(live + nodes + temp, e, "concat_bytes")   # the sum is freed after the concat
        at(live + nodes, e)
        live += out(e) - cell_in                     # the cell's input is released
        cell_in = out(e)
        h, w = ho, wo
    e = run(head_block(g.cout, h, w, num_classes, config.dropout))
    param(e)
    at(live, e)
    return total_ms, (peak if have_memory else None), params


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
        """Raises ValueError naming the first setting that differs from the table's."""
        want = settings_of(config, image_shape, num_classes)
        for key in SETTING_KEYS:
            have = self.settings[key]
            if key == "image_shape":
                have = [int(s) for s in have]
            if have != want[key]:
                show = (lambda v: "x".join(map(str, v))) if key == "image_shape" else str
                raise ValueError(
                    "%s was profiled with %s %s but the search uses %s %s: profile again with "
                    "the search's settings (python -m trainer.profile)"
                    % (self.name, key, show(have), key, show(want[key])))

    def check_space(self, config: TrainerConfig, ops: Sequence[str], num_nodes: int,
                    image_shape: Sequence[int], num_classes: int):
        """Settings match and every block of the search space has an entry.

        Raises:
          ValueError: a differing setting.
          MissingEntry: the first block of the space the table lacks.
        """
        self.check_settings(config, image_shape, num_classes)
        for block in space_blocks(config, ops, num_nodes, image_shape, num_classes):
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
        return walk(arch, config, image_shape, num_classes, self.entry)[0]

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
        blocks_ms, peak, param_bytes = walk(arch, config, image_shape, num_classes,
                                            self.entry, int(self.memory.get("input_bytes", 0)))
        latency = float(self.calibration["scale"]) * blocks_ms + float(
            self.calibration["offset_ms"])
        if peak is not None and self.memory.get("source"):
            memory_mb = (param_bytes + peak) / MIB
            memory_source = "table:%s" % self.memory["source"]
        else:
            from trainer.metrics import count, memory_estimate_mb
            memory_mb = memory_estimate_mb(count(arch, config, image_shape, num_classes),
                                           config.latency_batch)
            memory_source = "estimate"
        return {"latency_ms": latency, "memory_mb": float(memory_mb),
                "memory_source": memory_source, "latency_source": self.source,
                "latency_batch": int(config.latency_batch)}
