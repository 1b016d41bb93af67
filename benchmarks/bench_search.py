"""Benchmark of the search's orchestration: evaluations per hour by worker layout.

Runs the same search (same seed, so the same candidates) with
  A. one local worker with 1 thread      (--trainer_devices cpu --threads_per_worker 1)
  B. two local workers with 1 thread each (--trainer_devices cpu,cpu)
  C. one local worker with 2 threads      (--trainer_devices cpu --threads_per_worker 2)
and, with ``--ray``, the same on a private 127.0.0.1 Ray instance with 1 and 2
actors of 1 CPU each. Reports evaluations per hour of the search loop (worker
start-up excluded, shown apart), the speed-ups B/A, B/C, Ray2/Ray1 and
Ray2/B, and the controller's share of wall time (RL searcher, layout B).

    .venv/bin/python benchmarks/bench_search.py                 # embedded Fashion-MNIST
    .venv/bin/python benchmarks/bench_search.py --ray           # also Ray (WITH_RAY=1 setup)
    .venv/bin/python benchmarks/bench_search.py --data_path /tmp/c10 --bench_out ...

Every other flag of main.py applies (network size, --num_models, ...). Prints
a table and writes JSON (default benchmarks/results/search.json).
"""
import dataclasses
import os
import sys
import time

from absl import app
from absl import flags as absl_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import flags  # noqa: E402
from benchmarks.common import run_real_search, with_default_data  # noqa: E402

absl_flags.DEFINE_string("bench_out", os.path.join(ROOT, "benchmarks", "results", "search.json"),
                         "Where the JSON results go.")
absl_flags.DEFINE_boolean("ray", False, "Also measure Ray actors (1 and 2).")
absl_flags.DEFINE_string("layouts", "A,B,C", "Local layouts to run (A, B, C).")
absl_flags.DEFINE_boolean("controller_share", True, "Also run layout B with the RL searcher.")


def run_one(config, name, log_lines):
    run = run_real_search(config, log_lines.append)
    result, startup = run["result"], run["startup_s"]
    workers, devices = run["workers"], run["devices"]
    n = len(result.state.records)
    ok = sum(r["status"] == "ok" for r in result.state.records)
    train_s = sum(r["metrics"]["seconds"] for r in result.state.records
                  if r["status"] == "ok" and isinstance(r["metrics"].get("seconds"), float))
    row = {"layout": name, "workers": workers, "devices": devices,
           "evaluations": n, "ok": ok, "startup_s": round(startup, 2),
           "search_s": round(result.seconds, 2),
           "evals_per_hour": round(n / (result.seconds / 3600.0), 1),
           "mean_train_s": round(train_s / max(ok, 1), 2),
           "controller_s": round(result.searcher_seconds, 3),
           "controller_share_pct": round(100.0 * result.searcher_seconds / result.seconds, 3)}
    print("  %-28s %2d evals in %6.1f s (+%4.1f s start-up): %7.1f evals/hour, controller %.2f%%"
          % (name, n, result.seconds, startup, row["evals_per_hour"],
             row["controller_share_pct"]), flush=True)
    return row


def main(argv):
    F = absl_flags.FLAGS
    base = with_default_data(flags.build_config())
    random = dataclasses.replace(base, search=dataclasses.replace(base.search, searcher="random"))

    def layout(cfg, devices, threads, **extra):
        return dataclasses.replace(cfg, devices=dataclasses.replace(
            cfg.devices, trainer_devices=tuple(devices), threads_per_worker=threads, **extra))

    plans = {"A": ("A: 1 worker x 1 thread", layout(random, ["cpu"], 1)),
             "B": ("B: 2 workers x 1 thread", layout(random, ["cpu", "cpu"], 1)),
             "C": ("C: 1 worker x 2 threads", layout(random, ["cpu"], 2))}
    t = base.trainer
    print("search benchmark: %d evaluations, width %d, %d stages x %d cells, %d nodes, %d epochs, "
          "data %s" % (base.search.num_models, t.width, t.num_stages, t.num_cells,
                       base.agent.num_nodes, t.early_stop, base.data.data_path), flush=True)
    rows, lines = [], []
    for key in F.layouts.split(","):
        name, cfg = plans[key.strip()]
        rows.append(run_one(cfg, name, lines))
    if F.ray:
        for n in (1, 2):
            cfg = layout(random, ["cpu"], 1, cluster="ray", ray_address="local",
                         num_trainers=n, cpus_per_trainer=1)
            rows.append(run_one(cfg, "Ray: %d actor(s) x 1 CPU" % n, lines))
            import ray
            ray.shutdown()
    if F.controller_share:
        rows.append(run_one(layout(base, ["cpu", "cpu"], 1), "B with the RL controller", lines))
    by = {r["layout"][:2]: r for r in rows}
    ratios = {}

    def ratio(name, a, b):
        if a in by and b in by:
            ratios[name] = round(by[a]["evals_per_hour"] / by[b]["evals_per_hour"], 3)

    ratio("B_over_A", "B:", "A:")
    ratio("B_over_C", "B:", "C:")
    rays = [r for r in rows if r["layout"].startswith("Ray")]
    if len(rays) == 2:
        ratios["ray2_over_ray1"] = round(rays[1]["evals_per_hour"] / rays[0]["evals_per_hour"], 3)
        if "B:" in by:
            ratios["ray2_over_B"] = round(rays[1]["evals_per_hour"] / by["B:"]["evals_per_hour"], 3)
    print()
    print("| layout | workers | evals | search s | start-up s | evals/hour | mean train s "
          "| controller % |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %d | %d | %.1f | %.1f | %.1f | %.2f | %.3f |" % (
            r["layout"], r["workers"], r["evaluations"], r["search_s"], r["startup_s"],
            r["evals_per_hour"], r["mean_train_s"], r["controller_share_pct"]))
    print()
    for k, v in ratios.items():
        print("%s = %.2fx" % (k, v))
    os.makedirs(os.path.dirname(F.bench_out), exist_ok=True)
    from autodl_design.records import atomic_write_json
    atomic_write_json(F.bench_out, {
        "config": base.to_dict(), "rows": rows, "ratios": ratios, "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M")})
    print("wrote %s" % F.bench_out)


if __name__ == "__main__":
    app.run(main)
