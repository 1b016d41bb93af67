"""Accuracy of latency-table predictions: predicted vs measured latency and memory on this machine.

1. Profiles this machine with ``python -m trainer.profile`` (``--preset``
   sizes, default cpu; 28x28x1 images, 10 classes, 1 thread, all ops, 10
   nodes), as a user would on the target device.
2. For ``--archs`` random architectures (``autodl_design.search.searchers.
   CellSpace.sample``, seed ``--seed``, 10 nodes, all ops) predicts
   latency and peak memory from the table and measures them with
   ``trainer.metrics.measure_hardware`` (what the search measures without a
   table). The reference latency is the median of ``--measurements``
   measure_hardware runs; the spread of single runs around it is reported as
   the noise floor.

``--runtime paddle_inference|onnxruntime`` profiles through that runtime
(``python -m trainer.profile --runtime``) and measures the architectures
through it too (each saved and loaded once, then timed ``--measurements``
times ``--latency_repeats`` runs); memory is then not measured.

Prints a table and writes benchmarks/results/latency_table.json
(latency_table_RUNTIME.json for another runtime), with the load average at
start and end. Run under the shared lock:
  flock /tmp/bench.lock .venv/bin/python benchmarks/bench_latency_table.py [--runtime onnxruntime]
"""
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

flags.DEFINE_integer("archs", 30, "Random architectures to compare.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the random architectures.")
flags.DEFINE_integer("measurements", 3, "measure_hardware runs per architecture (median).",
                     lower_bound=1)
flags.DEFINE_enum("preset", "cpu", ["cpu", "gpu"], "Network size preset (gpu: width 64, "
                  "3 stages x 3 cells, 50 latency repeats).")
flags.DEFINE_integer("width", None, "Network width (default: the preset's).", lower_bound=1)
flags.DEFINE_string("image_shape", "28,28,1", "Input H,W,C.")
flags.DEFINE_integer("num_classes", 10, "Classes.", lower_bound=1)
flags.DEFINE_string("output", None, "JSON results file (default: benchmarks/results/"
                    "latency_table.json, latency_table_RUNTIME.json for another --runtime).")
# ---------------- export ----------------
flags.DEFINE_enum("runtime", "paddle", ["paddle", "paddle_inference", "onnxruntime"],
                  "Runtime the table is profiled through and the architectures are measured "
                  "with (python -m trainer.profile --runtime).")
FLAGS = flags.FLAGS


def _rel(pred: float, ref: float) -> float:
    return pred / ref - 1.0


def _nan_to_none(value):
    """``value`` with every float NaN replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return None if isinstance(value, float) and value != value else value


def _measurer(archs, config, image_shape):
    """``measure(i)`` -> latency (and memory) of ``archs[i]`` through ``--runtime``."""
    from trainer import metrics
    if FLAGS.runtime == "paddle":
        return lambda i: metrics.measure_hardware(archs[i], config, image_shape,
                                                  FLAGS.num_classes)
    from autodl_design.backend import paddle
    from trainer import profiling, runtimes
    from trainer.network import build_network
    compiled = runtimes.Compiled(FLAGS.runtime)
    for arch in archs:
        paddle.seed(0)
        compiled.add(build_network(arch, config, image_shape, FLAGS.num_classes),
                     [[config.latency_batch] + list(image_shape)])
    fns = compiled.build(1)
    compiled.close()  # the sessions and predictors hold the models in memory
    return lambda i: dict(profiling.time_fn(fns[i], config.latency_repeats), memory_mb=None)


def main(argv):
    del argv
    if FLAGS.output is None:
        FLAGS.output = os.path.join(ROOT, "benchmarks", "results", "latency_table%s.json" % (
            "" if FLAGS.runtime == "paddle" else "_" + FLAGS.runtime))
    from autodl_design.backend import paddle
    from autodl_design.config import SIZE_PRESETS, TrainerConfig
    from autodl_design.ops import OP_NAMES
    from autodl_design.spaces import CellSpace
    from trainer.latency_table import LatencyTable

    h, w, c = (int(s) for s in FLAGS.image_shape.split(","))
    image_shape = (c, h, w)
    load_start = list(os.getloadavg())
    tmp = tempfile.mkdtemp(prefix="bench_latency_table.")
    table_path = os.path.join(tmp, "table.json")
    sizes = SIZE_PRESETS[FLAGS.preset]
    width = FLAGS.width if FLAGS.width is not None else int(sizes["width"])
    cmd = [sys.executable, "-m", "trainer.profile", "--output", table_path,
           "--preset", FLAGS.preset, "--width", str(width), "--image_shape", FLAGS.image_shape,
           "--num_classes", str(FLAGS.num_classes), "--trainer_devices", "cpu",
           "--threads", "1", "--num_nodes", "10", "--runtime", FLAGS.runtime]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    profile_seconds = time.perf_counter() - t
    if r.returncode != 0:
        print(r.stderr, file=sys.stderr)
        return 1
    print(r.stdout.strip())
    table = LatencyTable.load(table_path)

    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(1)
    config = TrainerConfig(width=width, num_stages=int(sizes["num_stages"]),
                           num_cells=int(sizes["num_cells"]),
                           latency_repeats=int(sizes["latency_repeats"]), latency_batch=1)
    rng = np.random.default_rng(FLAGS.seed)
    archs = [CellSpace(10, OP_NAMES).sample(rng) for _ in range(FLAGS.archs)]
    measure = _measurer(archs, config, image_shape)
    rows = []
    print("\n%3s  %12s  %9s %9s %7s  %9s %9s %7s  %6s"
          % ("#", "arch", "meas ms", "pred ms", "err", "meas MB", "pred MB", "err", "noise"))
    for i, arch in enumerate(archs):
        pred = table.predict(arch, config, image_shape, FLAGS.num_classes)
        runs = [measure(i) for _ in range(FLAGS.measurements)]
        lat = [x["latency_ms"] for x in runs]
        ref = float(np.median(lat))
        mem = runs[0]["memory_mb"] if runs[0]["memory_mb"] is not None else float("nan")
        blocks_ms = table.block_sum(arch, config, image_shape, FLAGS.num_classes)
        row = {"arch_hash": arch.hash()[:12], "measured_ms": ref, "measured_runs_ms": lat,
               "predicted_ms": pred["latency_ms"], "latency_error": _rel(pred["latency_ms"], ref),
               "blocks_ms": blocks_ms, "uncalibrated_error": _rel(blocks_ms, ref),
               "measured_memory_mb": mem, "predicted_memory_mb": pred["memory_mb"],
               "memory_error": _rel(pred["memory_mb"], mem),
               "noise": max(abs(_rel(x, ref)) for x in lat)}
        rows.append(row)
        print("%3d  %12s  %9.3f %9.3f %+6.1f%%  %9.4f %9.4f %+6.1f%%  %5.1f%%"
              % (i, row["arch_hash"], ref, row["predicted_ms"], 100 * row["latency_error"], mem,
                 row["predicted_memory_mb"], 100 * row["memory_error"], 100 * row["noise"]))
    lat_err = np.abs([r["latency_error"] for r in rows])
    mem_err = np.abs([r["memory_error"] for r in rows])
    noise = np.array([r["noise"] for r in rows])
    raw_err = np.abs([r["uncalibrated_error"] for r in rows])
    summary = {
        "uncalibrated_median_abs_error": float(np.median(raw_err)),
        "uncalibrated_worst_abs_error": float(np.max(raw_err)),
        "latency_median_abs_error": float(np.median(lat_err)),
        "latency_worst_abs_error": float(np.max(lat_err)),
        "latency_mean_signed_error": float(np.mean([r["latency_error"] for r in rows])),
        "memory_median_abs_error": float(np.median(mem_err)),
        "memory_worst_abs_error": float(np.max(mem_err)),
        "measurement_noise_median": float(np.median(noise)),
        "measurement_noise_worst": float(np.max(noise)),
    }
    print("\n%-38s %s" % ("latency |error| median / worst", "%.1f%% / %.1f%%"
                          % (100 * summary["latency_median_abs_error"],
                             100 * summary["latency_worst_abs_error"])))
    print("%-38s %s" % ("uncalibrated (scale 1) median / worst", "%.1f%% / %.1f%%"
                        % (100 * summary["uncalibrated_median_abs_error"],
                           100 * summary["uncalibrated_worst_abs_error"])))
    print("%-38s %+.1f%%" % ("latency mean signed error",
                             100 * summary["latency_mean_signed_error"]))
    print("%-38s %s" % ("memory |error| median / worst", "%.2f%% / %.2f%%"
                        % (100 * summary["memory_median_abs_error"],
                           100 * summary["memory_worst_abs_error"])))
    print("%-38s %s" % ("single-run noise median / worst", "%.1f%% / %.1f%%"
                        % (100 * summary["measurement_noise_median"],
                           100 * summary["measurement_noise_worst"])))
    print("%-38s %.3f (%d networks)" % ("calibration scale", table.calibration["scale"],
                                       len(table.calibration["networks"])))
    print("%-38s %d entries, %.1f s" % ("table", len(table.entries), profile_seconds))
    print("%-38s %s -> %s" % ("load average (1, 5, 15 min) start -> end",
                             " ".join("%.2f" % x for x in load_start),
                             " ".join("%.2f" % x for x in os.getloadavg())))
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "device": table.device},
        "settings": table.settings, "profile_command": " ".join(cmd[1:]),
        "profile_seconds": profile_seconds, "table_entries": len(table.entries),
        "calibration": {k: v for k, v in table.calibration.items() if k != "networks"},
        "seed": FLAGS.seed, "measurements_per_arch": FLAGS.measurements,
        "runtime": FLAGS.runtime, "load_average_start_end": [load_start, list(os.getloadavg())],
        "summary": summary, "archs": rows,
    }
    os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
    fd, tmp_out = tempfile.mkstemp(dir=os.path.dirname(FLAGS.output), suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(_nan_to_none(result), f, indent=1)  # no memory through a static runtime
    os.replace(tmp_out, FLAGS.output)
    os.remove(table_path)
    os.rmdir(tmp)
    print("wrote %s" % FLAGS.output)
    return 0


if __name__ == "__main__":
    app.run(main)
