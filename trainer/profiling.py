"""Profiles the current device into a ``LatencyTable``: block timings, memory and calibration.

The library behind ``python -m trainer.profile`` (docs/latency_table.md):
``profile`` builds every block of the configured search space
(``trainer.latency_table.space_blocks``) from the layer builders of
``trainer.network``, times them in shuffled round-robin rounds, reads their
allocator figures, and calibrates the block sum on whole random networks
measured with ``trainer.metrics.measure_hardware``.
"""
import datetime
import functools
import platform
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from autodl_design.arch import Architecture
from autodl_design.config import Config, TrainerConfig
from autodl_design.interfaces import Decision
from autodl_design.spaces import CellSpace
from trainer import latency_table as lt
from trainer import metrics
from trainer.walk import ADD, HEAD, PROJECT
from trainer.walk import input_shape as network_input_shape

WARMUP = 3


def _log(line: str):
    print(line, flush=True)


def parse_image_shape(text: str) -> Tuple[int, int, int]:
    """'H,W,C' -> (C, H, W).

    Raises:
      ValueError: not three positive integers.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError("--image_shape %r is not H,W,C (three positive integers, e.g. 28,28,1)"
                         % text)
    h, w, c = (int(p) for p in parts)
    return c, h, w


def _read_fields(path: str) -> Dict[str, str]:
    """First value of every ``key: value`` line of a /proc file ({} if unreadable)."""
    names = {}
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip().lower(), value.strip()
                if value and key not in names:
                    names[key] = value
    except OSError:
        pass
    return names


def cpu_model() -> str:
    """A readable name of this machine's CPU (or board, on ARM boards)."""
    names = _read_fields("/proc/cpuinfo")
    try:
        with open("/proc/device-tree/model", "r", encoding="utf-8", errors="replace") as f:
            board = f.read().strip("\x00\n ")
    except OSError:
        board = ""
    for candidate in (names.get("model name"), board, names.get("model"),
                      names.get("hardware"), platform.processor(), platform.machine()):
        if candidate:
            return candidate
    return "unknown CPU"


def describe_device(device: str, threads: int, runtime: str = "paddle") -> Dict:
    """Device fields of the table: description, cpu_model, threads, device, runtime, date.

    ``runtime`` is one of ``trainer.runtimes.RUNTIMES``; the description
    names it with its version unless it is Paddle dygraph.
    """
    from autodl_design.backend import paddle
    from trainer import runtimes
    cpu = cpu_model()
    desc = cpu
    if device.startswith("gpu"):
        desc = "%s (%s)" % (paddle.device.cuda.get_device_name(int(device[4:])), cpu)
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    through = "" if runtime == "paddle" else ", through %s" % runtimes.version(runtime)
    return {"description": "%s, %s, %d thread%s, Paddle %s%s, %s"
                           % (desc, device, threads, "" if threads == 1 else "s",
                              paddle.__version__, through, date[:10]),
            "cpu_model": cpu, "device": device, "threads": int(threads),
            "paddle_version": paddle.__version__, "date": date,
            "runtime": runtime, "runtime_version": runtimes.version(runtime),
            "platform": platform.platform()}


def build_block(block: lt.Block, batch: int) -> Tuple[Callable, List]:
    """Paddle layers and random inputs of one block (current device, eval mode).

    Returns:
      (fn, inputs): ``fn()`` runs the block's forward pass on ``inputs``
      (float32 [batch, C, H, W] tensors) the way ``trainer.network`` does.
    """
    from autodl_design.backend import paddle
    from trainer import network
    step = block.step

    def rand(channels: int):
        return paddle.randn([batch, channels] + list(step.in_hw), "float32")

    if step.kind == ADD:
        x, y = rand(step.cin), rand(step.cin)
        return (lambda: x + y), [x, y]
    if step.kind == HEAD:
        layers = network.head_layers(step, block.dropout)
        for layer in layers:
            if layer is not None:
                layer.eval()
        x = rand(step.cin)
        return (lambda: network.head_forward(*layers, x)), [x]
    layer = network.layer_of(step)
    layer.eval()
    if step.kind == PROJECT:
        inputs = [rand(step.cin // len(step.inputs)) for _ in step.inputs]
        if len(inputs) == 1:
            return (lambda: layer(inputs[0])), inputs
        return (lambda: layer(paddle.concat(inputs, axis=1))), inputs
    x = rand(step.cin)
    return (lambda: layer(x)), [x]


@functools.lru_cache(maxsize=1)
def _block_classes():
    """The ``nn.Layer`` wrappers of ``block_layer`` (defined on first use: Paddle import)."""
    from autodl_design.backend import paddle
    from trainer import network

    class Add(paddle.nn.Layer):
        def forward(self, x, y):
            return x + y

    class Head(paddle.nn.Layer):
        def __init__(self, parts):
            super().__init__()
            self.bn, self.relu, self.pool, self.drop, self.fc = parts

        def forward(self, x):
            return network.head_forward(self.bn, self.relu, self.pool, self.drop, self.fc, x)

    class Project(paddle.nn.Layer):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, xs):  # a list of the free ends
            return self.inner(xs[0] if len(xs) == 1 else paddle.concat(xs, axis=1))

    class Single(paddle.nn.Layer):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    return Add, Head, Project, Single


def block_layer(block: lt.Block, batch: int):
    """(eval-mode ``nn.Layer``, input shapes, whether it takes them as one list).

    For a static runtime: the layer computes what ``build_block``'s fn
    computes, from its inputs (float32 [batch, C, H, W] each); a projection
    takes its free ends as one list argument.
    """
    from trainer import network
    add, head, project, single = _block_classes()
    step = block.step
    shape = [batch, step.cin] + list(step.in_hw)
    if step.kind == PROJECT:
        part = [batch, step.cin // len(step.inputs)] + list(step.in_hw)
        layer = project(network.layer_of(step))
        layer.eval()
        return layer, [part] * len(step.inputs), True
    if step.kind == ADD:
        layer, shapes = add(), [shape, shape]
    elif step.kind == HEAD:
        layer, shapes = head(network.head_layers(step, block.dropout)), [shape]
    else:
        layer, shapes = single(network.layer_of(step)), [shape]
    layer.eval()
    return layer, shapes, False


def time_fn(fn: Callable, repeats: int, warmup: int = WARMUP) -> Dict:
    """latency_ms (median), latency_p90_ms and latency_runs_ms of ``repeats`` calls of ``fn``."""
    times = []
    for i in range(warmup + repeats):
        t = time.perf_counter()
        fn()
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
    return {"latency_ms": float(np.median(times)),
            "latency_p90_ms": float(np.percentile(times, 90)), "latency_runs_ms": times}


def _median_rounds(fns: Sequence[Callable], repeats: int, sync: Callable,
                   interleave: Sequence[Callable] = (), seed: int = 0) -> List[float]:
    """Median ms of each fn, timed one call at a time in shuffled round-robin order.

    Every round calls every block once in a new random order, so a block is
    timed after other blocks have run (caches and predictors are as cold as
    inside a network), not in a hot loop of its own. The ``interleave``
    callables (whole-network calibration measurements) run spread evenly
    between the timed rounds, so both see the same machine load.
    """
    rng = np.random.default_rng(seed)
    times: List[List[float]] = [[] for _ in fns]
    order = np.arange(len(fns))
    pending = list(interleave)
    for r in range(WARMUP + repeats):
        rng.shuffle(order)
        for i in order:
            sync()
            t = time.perf_counter()
            fns[i]()
            sync()
            if r >= WARMUP:
                times[i].append((time.perf_counter() - t) * 1e3)
        done = r + 1 - WARMUP
        while pending and done > 0 and (len(interleave) - len(pending)) < (
                len(interleave) * done + repeats - 1) // repeats:
            pending.pop(0)()
    return [float(np.median(t)) for t in times]


def _input_bytes(paddle, stats: Optional[metrics.AllocatorStats], shape: List[int]) -> int:
    """Allocator bytes of one float32 input batch of ``shape`` (0 without statistics)."""
    if stats is None:
        return 0
    before = stats.current()
    x = paddle.randn(shape, "float32")
    used = stats.current() - before
    del x
    return int(used)


def measure_block(block: lt.Block, batch: int, stats: Optional[metrics.AllocatorStats],
                  sync: Callable) -> Tuple[Dict, Callable]:
    """A block's table entry without its latency (memory figures if ``stats``), and its fn.

    Entry: kind, what, and with allocator statistics param_bytes, peak_bytes,
    out_bytes (and concat_bytes for a projection), as docs/latency_table.md
    defines them.
    """
    from autodl_design.backend import paddle
    before = stats.current() if stats is not None else 0
    fn, inputs = build_block(block, batch)
    e = {"kind": block.kind, "what": block.text}
    fn()                                             # lazy set-up outside the stats
    sync()
    if stats is None:
        return e, fn
    inputs_bytes = sum(int(np.prod(t.shape)) * 4 for t in inputs)
    base = stats.current()
    e["param_bytes"] = int(base - before - inputs_bytes)
    stats.reset_peak()
    y = fn()
    sync()
    e["peak_bytes"] = int(stats.peak() - base)
    e["out_bytes"] = int(stats.current() - base)
    del y
    if block.kind == PROJECT:
        base = stats.current()
        y = paddle.concat(inputs, axis=1) if len(inputs) > 1 else None
        e["concat_bytes"] = int(stats.current() - base)
        del y
    return e, fn


def _measure_blocks(blocks: Sequence[lt.Block], batch: int,
                    stats: Optional[metrics.AllocatorStats], rounds: int,
                    interleave: Sequence[Callable], shapes: Sequence[Sequence[int]]
                    ) -> Tuple[Dict[str, int], Dict[str, Dict]]:
    """(input batch bytes per ``lt.shape_key`` of ``shapes``, block key -> entry).

    Memory first, then ``rounds`` timed rounds.

    The ``interleave`` callables run spread over the rounds (``_median_rounds``).
    """
    from autodl_design.backend import paddle
    sync = functools.partial(metrics.sync, paddle)
    with paddle.no_grad():
        input_bytes = {lt.shape_key(s): _input_bytes(paddle, stats, [batch] + list(s))
                       for s in shapes}
        measured = [measure_block(block, batch, stats, sync) for block in blocks]
        medians = _median_rounds([fn for _, fn in measured], rounds, sync, interleave)
    return input_bytes, {block.key: dict(e, latency_ms=ms)
                         for block, (e, _), ms in zip(blocks, measured, medians)}


def _summarise_runs(runs: Sequence[Sequence[Dict]]) -> List[Dict]:
    """Per calibration network: median latency of its runs, the runs, its memory."""
    return [{"latency_ms": float(np.median([r["latency_ms"] for r in rs])),
             "latency_runs_ms": [r["latency_ms"] for r in rs],
             "memory_mb": rs[0]["memory_mb"]} for rs in runs]


def _compile(runtime: str, blocks: Sequence[lt.Block], archs: Sequence[Architecture],
             tc: TrainerConfig, image_shape: Sequence[int], num_classes: int, threads: int,
             seed: int, configs: Sequence[TrainerConfig]):
    """(block fns, network fns, the ``runtimes.Compiled`` to close) of a static runtime."""
    from autodl_design.backend import paddle
    from trainer import runtimes
    from trainer.network import build_network
    compiled = runtimes.Compiled(runtime)
    try:
        compiled.add(_block_classes()[0](), [[1, 1, 1, 1]] * 2)  # the cost of one call
        for block in blocks:
            compiled.add(*block_layer(block, tc.latency_batch))
        for arch, c in zip(archs, configs):
            paddle.seed(seed)
            compiled.add(build_network(arch, c, image_shape, num_classes),
                         [[tc.latency_batch] + list(network_input_shape(c, image_shape))])
        fns = compiled.build(threads, seed)
    except BaseException:
        compiled.close()
        raise
    return fns[:len(blocks) + 1], fns[len(blocks) + 1:], compiled


def _measure_runtime_blocks(blocks: Sequence[lt.Block], fns: Sequence[Callable], rounds: int,
                            interleave: Sequence[Callable]) -> Tuple[float, Dict[str, Dict]]:
    """(ms of one runtime call, block key -> entry) of blocks run through a static runtime.

    ``fns[0]`` is a model doing almost nothing (1 + 1): its median is what every call of the
    runtime costs besides the block's work. It is taken off every block (a
    network is one call, not one per block) and becomes the calibration's
    offset.
    """
    medians = _median_rounds(fns, rounds, lambda: None, interleave)
    call = medians[0]
    return call, {block.key: {"kind": block.kind, "what": block.text,
                              "latency_ms": max(0.0, ms - call), "call_latency_ms": ms}
                  for block, ms in zip(blocks, medians[1:])}


def _measure(runtime: str, blocks: Sequence[lt.Block], archs: Sequence[Architecture],
             runs: List[List[Dict]], stats: Optional[metrics.AllocatorStats], tc: TrainerConfig,
             image_shape: Sequence[int], num_classes: int, threads: int, passes: int,
             seed: int, configs: Sequence[TrainerConfig]
             ) -> Tuple[Dict[str, int], Dict[str, Dict], float]:
    """Times the blocks through ``runtime``, the calibration networks in between (into ``runs``).

    Args:
      configs: the trainer settings (scale) of each calibration network.

    Returns:
      (input batch bytes per input shape ``lt.shape_key`` ({} for a static
      runtime), block key -> entry, ms of one runtime call (0 for paddle)).
    """
    from autodl_design.backend import paddle
    compiled = None
    try:
        if runtime != "paddle":
            block_fns, net_fns, compiled = _compile(runtime, blocks, archs, tc, image_shape,
                                                    num_classes, threads, seed, configs)

            def measure_network(i: int):
                runs[i].append(dict(time_fn(net_fns[i], tc.latency_repeats), memory_mb=None))
        else:
            def measure_network(i: int):
                runs[i].append(metrics.measure_hardware(archs[i], configs[i], image_shape,
                                                        num_classes, seed=seed))
        interleave = [functools.partial(measure_network, i)
                      for _ in range(passes) for i in range(len(archs))]
        paddle.seed(seed)
        rounds = tc.latency_repeats * passes
        if runtime != "paddle":
            call_ms, entries = _measure_runtime_blocks(blocks, block_fns, rounds, interleave)
            return {}, entries, call_ms
        shapes = sorted({network_input_shape(c, image_shape) for c in [tc] + list(configs)})
        input_bytes, entries = _measure_blocks(blocks, tc.latency_batch, stats, rounds,
                                               interleave, shapes)
        return input_bytes, entries, 0.0
    finally:
        if compiled is not None:
            compiled.close()


def profile(config: Config, image_shape: Sequence[int], num_classes: int, device: str,
            threads: int, calibration_archs: int = 10, calibration_seed: int = 20240611,
            passes: int = 5, log: Callable[[str], None] = _log, *, seed: int = 0,
            runtime: str = "paddle", decisions: Sequence[Decision] = ()) -> lt.LatencyTable:
    """Measures every block of the configured search space on the current device.

    Args:
      config: the full ``Config`` (sizes from ``config.trainer``, op list and
        nodes from ``config.agent``).
      image_shape: (C, H, W).
      num_classes: classifier outputs.
      device: the Paddle device in use ('cpu', 'gpu:0'), for the description.
      threads: CPU threads in use, for the description.
      calibration_archs: random whole networks measured with
        ``trainer.metrics.measure_hardware`` to calibrate composition.
      calibration_seed: their seed.
      passes: passes over all blocks (``latency_repeats`` rounds each) and all
        calibration networks (one ``measure_hardware`` each).
      log: where progress lines go.
      seed: the Paddle seed of the blocks' weights and inputs.
      runtime: what runs the blocks and networks (``trainer.runtimes.RUNTIMES``):
        ``paddle`` (dygraph, with allocator memory figures), or
        ``paddle_inference``/``onnxruntime`` on the CPU (latency only; the
        table's memory is then the estimate).
      decisions: the decisions of a search-space file
        (``recipe.parse_decisions``): the table then covers every scale of
        its width_mult, depth, resolution and dropout choices
        (``lt.scale_configs``; ``settings["scales"]``), and the calibration
        networks take the scales in turn.

    Returns:
      The ``LatencyTable`` (not saved); ``device['runtime']`` names the runtime.

    Raises:
      trainer.onnx_export.ConversionError: paddle2onnx could not convert a block.
    """
    from autodl_design.backend import paddle
    tc = config.trainer
    image_shape = tuple(int(s) for s in image_shape)
    batch = tc.latency_batch
    configs = lt.scale_configs(tc, decisions)
    blocks = lt.scaled_space_blocks(tc, decisions, config.agent.ops, config.agent.num_nodes,
                                    image_shape, num_classes)
    log("profiling %d blocks and %d calibration networks on %s through %s (batch %d, %d passes "
        "x %d rounds) ..." % (len(blocks), calibration_archs, device, runtime, batch, passes,
                              tc.latency_repeats))
    rng = np.random.default_rng(calibration_seed)
    archs = [CellSpace(config.agent.num_nodes, config.agent.ops).sample(rng)
             for _ in range(calibration_archs)]
    arch_configs = [configs[i % len(configs)] for i in range(len(archs))]
    stats = None if runtime != "paddle" else metrics.allocator_stats(paddle)
    runs: List[List[Dict]] = [[] for _ in archs]
    rng_state = paddle.get_rng_state()
    try:
        input_bytes, entries, call_ms = _measure(runtime, blocks, archs, runs, stats, tc,
                                                 image_shape, num_classes, threads, passes, seed,
                                                 arch_configs)
    finally:
        paddle.set_rng_state(rng_state)
    settings = dict(lt.settings_of(tc, image_shape, num_classes), ops=list(config.agent.ops),
                    num_nodes=int(config.agent.num_nodes))
    base_shape = lt.shape_key(network_input_shape(tc, image_shape))
    memory = {"source": stats.source if stats is not None else "",
              "input_bytes": int(input_bytes.get(base_shape, 0))}
    scaled = [d for d in decisions if d.name in lt.TABLE_DECISIONS]
    if scaled:
        settings.update(scales=[lt.scale_of(c, image_shape) for c in configs],
                        search_space={d.name: list(d.choices) for d in scaled})
        memory["input_bytes_by_shape"] = input_bytes
    table = lt.LatencyTable(describe_device(device, threads, runtime), settings,
                            {"scale": 1.0, "offset_ms": 0.0, "networks": []}, memory, entries)
    table.calibration = calibrate(table, archs, _summarise_runs(runs), tc, image_shape,
                                  num_classes, calibration_seed, log, offset_ms=call_ms,
                                  configs=arch_configs if scaled else None)
    table.calibration.update(passes=passes, block_rounds=passes * tc.latency_repeats,
                             warmup_rounds=WARMUP)
    return table


def calibrate(table: lt.LatencyTable, archs: Sequence[Architecture], measured: Sequence[Dict],
              trainer_config: TrainerConfig, image_shape: Sequence[int], num_classes: int,
              seed: int, log: Callable[[str], None] = _log, offset_ms: float = 0.0,
              configs: Optional[Sequence[TrainerConfig]] = None) -> Dict:
    """The table's calibration: scale = median((measured - offset) / block sum) over networks.

    Args:
      table: the table with its entries.
      archs: the calibration architectures (random, ``seed``).
      measured: per network ``latency_ms`` (median of its
        ``trainer.metrics.measure_hardware`` runs, what the search measures
        without a table, taken between the block rounds), ``latency_runs_ms``
        and ``memory_mb``.
      configs: each network's trainer settings (its scale); None = all
        ``trainer_config``.

    Returns:
      dict: scale, offset_ms (0), method, and per network its block sum,
      measured and calibrated latency and measured/predicted memory.

    For Paddle dygraph the offset is 0: inside a network every block costs a
    roughly fixed fraction more or less than in the profiler's round-robin
    (caches, the cell's Python loop), so a ratio describes the composition.
    A static runtime (``offset_ms``: one call of an empty model) pays its
    per-call cost once per network, not once per block.
    """
    networks = []
    for i, (arch, hw) in enumerate(zip(archs, measured)):
        c = configs[i] if configs is not None else trainer_config
        blocks_ms, peak, params = table.walk(arch, c, image_shape, num_classes)
        row = {"arch_hash": arch.hash()[:12], "blocks_ms": blocks_ms,
               "measured_ms": hw["latency_ms"], "measured_runs_ms": hw["latency_runs_ms"],
               "measured_memory_mb": hw["memory_mb"]}
        if configs is not None:
            row["scale"] = lt.describe_scale(lt.scale_of(c, image_shape))
        if peak is not None:
            row["predicted_memory_mb"] = (peak + params) / float(1 << 20)
        networks.append(row)
    scale = (float(np.median([(r["measured_ms"] - offset_ms) / r["blocks_ms"]
                              for r in networks])) if networks else 1.0)
    for r in networks:
        r["predicted_ms"] = scale * r["blocks_ms"] + offset_ms
    if networks:
        errors = [abs(r["predicted_ms"] / r["measured_ms"] - 1) for r in networks]
        log("calibration: scale %.3f over %d networks (median |error| %.1f%%, worst %.1f%%)"
            % (scale, len(networks), 100 * float(np.median(errors)), 100 * max(errors)))
    return {"scale": scale, "offset_ms": float(offset_ms), "networks": networks,
            "method": "latency_ms = scale * sum of block medians + offset_ms; scale = median "
                      "over %d random networks (seed %d) of (measured latency - offset_ms) / "
                      "block sum; offset_ms = one call of the runtime (0 for Paddle dygraph)"
                      % (len(networks), seed)}


def input_shape(data_path: str, image_shape_hwc: str, num_classes: int
                ) -> Tuple[Tuple[int, int, int], int]:
    """((C, H, W), classes): from the dataset's manifest if ``data_path``, else as given.

    Raises:
      trainer.data.DatasetError: the dataset's manifest cannot be read.
      ValueError: ``image_shape_hwc`` is not 'H,W,C'.
    """
    if data_path:
        from trainer.data import read_manifest
        manifest = read_manifest(data_path)
        h, w, c = (int(s) for s in manifest["image_shape_hwc"])
        return (c, h, w), len(manifest["class_names"])
    return parse_image_shape(image_shape_hwc), int(num_classes)


def use_device(device: str, threads: int) -> str:
    """Makes ``device`` current with ``threads`` CPU threads; returns it.

    Raises:
      RuntimeError: a GPU that Paddle does not see.
    """
    from autodl_design import devices
    from autodl_design.backend import paddle
    device = devices.use_device(device)
    paddle.base.core.set_num_threads(int(threads))
    return device
