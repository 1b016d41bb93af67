"""Profiles the target device: python -m trainer.profile --output TABLE.json [--threads T].

Run it on the machine the searched network will be deployed on (a Raspberry
Pi, a Jetson, a desktop CPU; Paddle installed there), with the same size
flags as the search (``--preset``/``--width``/``--num_stages``/``--num_cells``/
``--ratio``/``--dropout``, ``--num_nodes``, ``--ops``, ``--latency_batch``,
``--latency_repeats``) and the search's image shape (``--image_shape H,W,C``
and ``--num_classes``, or ``--data_path`` to read both from the dataset's
manifest). It measures every building block the configured network can
contain (``trainer.latency_table.space_blocks``) and a few whole networks to
calibrate how the blocks compose, and writes TABLE.json; copy it to the
search machine and run ``main.py --latency_table TABLE.json``.
docs/latency_table.md describes what is measured and how predictions compose.
"""
import datetime
import functools
import os
import platform
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from absl import app
from absl import flags as absl_flags

import flags  # noqa: F401  (defines the shared flags and build_config)

absl_flags.DEFINE_string("output", None, "Where to write the latency table (JSON).")
absl_flags.DEFINE_integer("threads", 1, "CPU threads Paddle may use (as the deployed model "
                          "will).", lower_bound=1)
absl_flags.DEFINE_string("image_shape", "28,28,1", "Input image H,W,C (the embedded default "
                         "dataset is 28,28,1); ignored with --data_path, whose manifest gives it.")
absl_flags.DEFINE_integer("num_classes", 10, "Classifier outputs; ignored with --data_path.",
                          lower_bound=1)
absl_flags.DEFINE_integer("calibration_archs", 10, "Random whole networks measured to "
                          "calibrate the sum of the block timings (0 = no calibration: scale "
                          "1).", lower_bound=0)
absl_flags.DEFINE_integer("calibration_seed", 20240611, "Seed of the calibration "
                          "architectures.", lower_bound=0)
absl_flags.DEFINE_integer("passes", 5, "Passes over all blocks and calibration networks, "
                          "each of --latency_repeats timed rounds; medians are taken over all "
                          "of them, so a burst of load from other processes during one pass "
                          "does not skew the table.", lower_bound=1)

FLAGS = absl_flags.FLAGS
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


def cpu_model() -> str:
    """A readable name of this machine's CPU (or board, on ARM boards)."""
    names = {}
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip().lower(), value.strip()
                if value and key not in names:
                    names[key] = value
    except OSError:
        pass
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


def describe_device(device: str, threads: int) -> Dict:
    """Device fields of the table: description, cpu_model, threads, device, Paddle version, date."""
    from autodl_design.backend import paddle
    cpu = cpu_model()
    desc = cpu
    if device.startswith("gpu"):
        desc = "%s (%s)" % (paddle.device.cuda.get_device_name(int(device[4:])), cpu)
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return {"description": "%s, %s, %d thread%s, Paddle %s, %s"
                           % (desc, device, threads, "" if threads == 1 else "s",
                              paddle.__version__, date[:10]),
            "cpu_model": cpu, "device": device, "threads": int(threads),
            "paddle_version": paddle.__version__, "date": date,
            "platform": platform.platform()}


def build_block(block, batch: int):
    """Paddle layers and inputs of one block (current device, eval mode).

    Returns:
      (fn, inputs): ``fn()`` runs the block's forward pass on ``inputs`` the
      way ``trainer.network`` does.
    """
    from autodl_design.backend import paddle
    from trainer.network import _bn_relu, _conv, build_op
    nn = paddle.nn
    kind, a = block.kind, block.args

    def rand(c, h, w):
        return paddle.randn([batch, c, h, w], "float32")

    if kind == "stem":
        cin, cout, h, w = a
        layer, x = _conv(cin, cout, (3, 3)), rand(cin, h, w)
        fn = lambda: layer(x)                                   # noqa: E731
        inputs = [x]
    elif kind == "compress":
        cin, n, h, w = a
        layer = nn.Sequential(*_bn_relu(cin), _conv(cin, n, (1, 1)), *_bn_relu(n))
        x = rand(cin, h, w)
        fn, inputs = (lambda: layer(x)), [x]
    elif kind == "op":
        name, n, h, w, stride = a
        layer, x = build_op(name, n, stride), rand(n, h, w)
        fn, inputs = (lambda: layer(x)), [x]
    elif kind == "bnrelu":
        n, h, w = a
        layer, x = nn.Sequential(*_bn_relu(n)), rand(n, h, w)
        fn, inputs = (lambda: layer(x)), [x]
    elif kind == "add":
        n, h, w = a
        layer, x, y = None, rand(n, h, w), rand(n, h, w)
        fn, inputs = (lambda: x + y), [x, y]
    elif kind == "project":
        k, n, cout, h, w = a
        layer = _conv(k * n, cout, (1, 1))
        inputs = [rand(n, h, w) for _ in range(k)]
        if k == 1:
            fn = lambda: layer(inputs[0])                       # noqa: E731
        else:
            fn = lambda: layer(paddle.concat(inputs, axis=1))   # noqa: E731
    elif kind == "head":
        c, h, w, num_classes, dropout = a
        bn, relu, pool = nn.BatchNorm2D(c), nn.ReLU(), nn.AdaptiveAvgPool2D(1)
        drop = nn.Dropout(dropout) if dropout > 0 else None
        fc = nn.Linear(c, num_classes)
        layer = nn.LayerList([bn, relu, pool, fc] + ([drop] if drop is not None else []))
        x = rand(c, h, w)

        def fn():
            g = paddle.flatten(pool(relu(bn(x))), 1)
            if drop is not None:
                g = drop(g)
            return fc(g)
        inputs = [x]
    else:
        raise ValueError("block %r has kind %r, which the profiler cannot build"
                         % (block.key, kind))
    if layer is not None:
        layer.eval()
    return fn, inputs


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


def profile(config, image_shape: Sequence[int], num_classes: int, device: str, threads: int,
            calibration_archs: int = 10, calibration_seed: int = 20240611, passes: int = 5,
            log: Callable[[str], None] = _log):
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

    Returns:
      The ``LatencyTable`` (not saved).
    """
    from autodl_design.backend import paddle
    from autodl_design.spaces import CellSpace
    from trainer import latency_table as lt
    from trainer import metrics
    tc = config.trainer
    image_shape = tuple(int(s) for s in image_shape)
    batch = tc.latency_batch
    blocks = lt.space_blocks(tc, config.agent.ops, config.agent.num_nodes, image_shape,
                             num_classes)
    log("profiling %d blocks and %d calibration networks on %s (batch %d, %d passes x %d "
        "rounds) ..." % (len(blocks), calibration_archs, device, batch, passes,
                         tc.latency_repeats))
    try:
        stats = metrics._AllocatorStats(paddle)
    except (AttributeError, ImportError):
        stats = None
    sync = lambda: metrics._sync(paddle)                        # noqa: E731
    rng_state = paddle.get_rng_state()
    paddle.seed(tc.seed)
    entries: Dict[str, Dict] = {}
    fns = []
    with paddle.no_grad():
        input_bytes = 0
        if stats is not None:
            before = stats.current()
            x = paddle.randn([batch] + list(image_shape), "float32")
            input_bytes = stats.current() - before
            del x
        for block in blocks:
            before = stats.current() if stats is not None else 0
            fn, inputs = build_block(block, batch)
            e = {"kind": block.kind, "what": block.text}
            fn()                                             # lazy set-up outside the stats
            sync()
            if stats is not None:
                inputs_bytes = sum(int(np.prod(t.shape)) * 4 for t in inputs)
                base = stats.current()
                e["param_bytes"] = int(base - before - inputs_bytes)
                stats.reset_peak()
                y = fn()
                sync()
                e["peak_bytes"] = int(stats.peak() - base)
                e["out_bytes"] = int(stats.current() - base)
                del y
                if block.kind == "project":
                    base = stats.current()
                    y = paddle.concat(inputs, axis=1) if len(inputs) > 1 else None
                    e["concat_bytes"] = int(stats.current() - base)
                    del y
            entries[block.key] = e
            fns.append(fn)
        rng = np.random.default_rng(calibration_seed)
        archs = [CellSpace(config.agent.num_nodes, config.agent.ops).sample(rng)
                 for _ in range(calibration_archs)]
        runs: List[List[Dict]] = [[] for _ in archs]
        interleave = [functools.partial(
            lambda i: runs[i].append(metrics.measure_hardware(archs[i], tc, image_shape,
                                                              num_classes)), i)
            for _ in range(passes) for i in range(len(archs))]
        medians = _median_rounds(fns, tc.latency_repeats * passes, sync, interleave)
        measured = [{"latency_ms": float(np.median([r["latency_ms"] for r in rs])),
                     "latency_runs_ms": [r["latency_ms"] for r in rs],
                     "memory_mb": rs[0]["memory_mb"]} for rs in runs]
    for block, ms in zip(blocks, medians):
        entries[block.key]["latency_ms"] = ms
    paddle.set_rng_state(rng_state)
    settings = lt.settings_of(tc, image_shape, num_classes)
    settings.update(ops=list(config.agent.ops), num_nodes=int(config.agent.num_nodes))
    table = lt.LatencyTable(
        describe_device(device, threads), settings,
        {"scale": 1.0, "offset_ms": 0.0, "networks": []},
        {"source": stats.source if stats is not None else "", "input_bytes": int(input_bytes)},
        entries)
    table.calibration = calibrate(table, archs, measured, tc, image_shape, num_classes,
                                  calibration_seed, log)
    table.calibration.update(passes=passes, block_rounds=passes * tc.latency_repeats,
                             warmup_rounds=WARMUP)
    return table


def calibrate(table, archs: Sequence, measured: Sequence[Dict], trainer_config,
              image_shape, num_classes: int, seed: int,
              log: Callable[[str], None] = _log) -> Dict:
    """The table's calibration: scale = median(measured / block sum) over whole networks.

    Args:
      table: the table with its entries.
      archs: the calibration architectures (random, ``seed``).
      measured: per network ``latency_ms`` (median of its
        ``trainer.metrics.measure_hardware`` runs, what the search measures
        without a table, taken between the block rounds), ``latency_runs_ms``
        and ``memory_mb``.

    Returns:
      dict: scale, offset_ms (0), method, and per network its block sum,
      measured and calibrated latency and measured/predicted memory.

    The offset stays 0: inside a network every block costs a roughly fixed
    fraction more or less than in the profiler's round-robin (caches, the
    cell's Python loop), so a ratio describes the composition.
    """
    networks = []
    for arch, hw in zip(archs, measured):
        blocks_ms, peak, params = table_walk(table, arch, trainer_config, image_shape,
                                             num_classes)
        row = {"arch_hash": arch.hash()[:12], "blocks_ms": blocks_ms,
               "measured_ms": hw["latency_ms"], "measured_runs_ms": hw["latency_runs_ms"],
               "measured_memory_mb": hw["memory_mb"]}
        if peak is not None:
            row["predicted_memory_mb"] = (peak + params) / float(1 << 20)
        networks.append(row)
    scale = (float(np.median([r["measured_ms"] / r["blocks_ms"] for r in networks]))
             if networks else 1.0)
    for r in networks:
        r["predicted_ms"] = scale * r["blocks_ms"]
    if networks:
        errors = [abs(r["predicted_ms"] / r["measured_ms"] - 1) for r in networks]
        log("calibration: scale %.3f over %d networks (median |error| %.1f%%, worst %.1f%%)"
            % (scale, len(networks), 100 * float(np.median(errors)), 100 * max(errors)))
    return {"scale": scale, "offset_ms": 0.0, "networks": networks,
            "method": "latency_ms = scale * sum of block medians; scale = median over %d random "
                      "networks (seed %d) of measure_hardware latency / block sum"
                      % (len(networks), seed)}


def table_walk(table, arch, trainer_config, image_shape, num_classes):
    """(block sum ms, peak activation bytes or None, parameter bytes) of ``arch`` in ``table``."""
    from trainer import latency_table as lt
    return lt.walk(arch, trainer_config, image_shape, num_classes, table.entry,
                   int(table.memory.get("input_bytes", 0)))


def _fail(message, code: int = 2) -> int:
    print("error: %s" % " ".join(str(message).split()), file=sys.stderr)
    return code


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    if not FLAGS.output:
        return _fail("--output is required: the latency table file to write, e.g. "
                     "--output table.json")
    folder = os.path.dirname(os.path.abspath(FLAGS.output))
    if not os.path.isdir(folder):
        return _fail("--output %s: folder %s does not exist" % (FLAGS.output, folder))
    config = flags.build_config()
    if config.data.data_path:
        from trainer.data import DatasetError, read_manifest
        try:
            manifest = read_manifest(config.data.data_path)
        except DatasetError as e:
            return _fail(e)
        h, w, c = (int(s) for s in manifest["image_shape_hwc"])
        image_shape, num_classes = (c, h, w), len(manifest["class_names"])
    else:
        try:
            image_shape = parse_image_shape(FLAGS.image_shape)
        except ValueError as e:
            return _fail(e)
        num_classes = FLAGS.num_classes
    from autodl_design.backend import paddle
    from autodl_design.devices import use_device
    try:
        device = use_device(config.devices.trainer_devices[0])
    except RuntimeError as e:
        return _fail(e)
    paddle.base.core.set_num_threads(FLAGS.threads)
    t = time.perf_counter()
    table = profile(config, image_shape, num_classes, device, FLAGS.threads,
                    FLAGS.calibration_archs, FLAGS.calibration_seed, FLAGS.passes)
    table.save(FLAGS.output)
    _log("wrote %s: %d entries, %s, in %.1f s" % (FLAGS.output, len(table.entries),
                                                  table.device["description"],
                                                  time.perf_counter() - t))
    return 0


if __name__ == "__main__":
    from autodl_design import cli
    cli.run(main)
