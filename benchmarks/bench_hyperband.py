"""Benchmark: Hyperband against plain evaluation at equal wall time on real data.

For each seed, runs the same search twice on 2 local CPU workers for
``--minutes`` of wall time each (``--max_time``; the budget of evaluations is
unlimited): once with every candidate trained ``--max_epochs`` (=
``--early_stop``) epochs, once with ``--scheduler hyperband`` (brackets from
``--min_epochs``, reduction factor ``--eta``, promoted candidates continuing
from their saved weights). Reports per run the evaluations, the candidates
evaluated (distinct architectures the searcher proposed), the best validation
accuracy (and the best among full-budget evaluations) and its test accuracy.
Target (issue 18): Hyperband's best validation accuracy >= plain evaluation's
while evaluating >= 3x as many candidates.

    nice -n 10 .venv/bin/python benchmarks/bench_hyperband.py --preset cpu \\
        --searcher random --minutes 20 --seeds 0,1 [--bench_schedulers hyperband,successive_halving]

Every flag of main.py applies. Prints a table and writes JSON (default
benchmarks/results/hyperband.json).
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
from autodl_design.search.schedulers import config_rung_epochs, cycle_cost  # noqa: E402
from benchmarks.common import run_real_search, with_default_data  # noqa: E402

absl_flags.DEFINE_string("bench_out", os.path.join(ROOT, "benchmarks", "results",
                                                   "hyperband.json"), "Where the JSON goes.")
absl_flags.DEFINE_float("minutes", 20.0, "Wall time of each search.", lower_bound=0.1)
absl_flags.DEFINE_string("seeds", "0,1", "Seeds (one plain and one hyperband run each).")
absl_flags.DEFINE_string("keep_logs", "", "Keep each run's log folder here (NAME_sSEED) and "
                         "write their comparison (report --compare) to KEEP_LOGS/compare.")
absl_flags.DEFINE_list("bench_schedulers", ["hyperband"], "The schedulers compared with plain "
                       "evaluation (hyperband, successive_halving).")


def summarize(name, seed, run, max_epochs):
    """One table row of a finished run."""
    records = run["records"]
    ok = [r for r in records if r["status"] == "ok" and r["feasible"]]
    full = [r for r in ok if r["metrics"].get("epochs") == max_epochs]
    proposed = [r for r in records if r.get("rung") is None or r["rung"]["rung"] == 0]
    best = max(ok, key=lambda r: (r["metrics"]["val_accuracy"], -r["index"]), default=None)
    best_full = max(full, key=lambda r: (r["metrics"]["val_accuracy"], -r["index"]),
                    default=None)
    row = {"run": name, "seed": seed, "evaluations": len(records),
           "candidates": len({r["arch_hash"] for r in proposed}),
           "epochs_trained": sum(r["metrics"].get("epochs", 0) - (r["metrics"].get(
               "resumed_at_epoch") or 0) for r in records if r["status"] == "ok"),
           "seconds": round(run["result"].seconds, 1),
           "best_val": best["metrics"]["val_accuracy"] if best else None,
           "best_val_epochs": best["metrics"].get("epochs") if best else None,
           "best_test": best["metrics"].get("test_accuracy") if best else None,
           "best_full_val": best_full["metrics"]["val_accuracy"] if best_full else None,
           "full_budget_evaluations": len(full)}
    print("  %-11s seed %d: %3d evaluations, %3d candidates, %4d epochs, best val %s (%s "
          "epochs), best full-budget val %s" % (
              name, seed, row["evaluations"], row["candidates"], row["epochs_trained"],
              _f(row["best_val"]), row["best_val_epochs"], _f(row["best_full_val"])),
          flush=True)
    return row


def _f(v):
    return "n/a" if v is None else "%.4f" % v


def main(argv):
    F = absl_flags.FLAGS
    base = with_default_data(flags.build_config())
    base = dataclasses.replace(
        base, devices=dataclasses.replace(base.devices, trainer_devices=("cpu", "cpu")),
        search=dataclasses.replace(base.search, max_time=60.0 * F.minutes, num_models=100_000))
    max_epochs = base.trainer.early_stop
    print("hyperband benchmark: %s searcher, %.1f min per run, 2 CPU workers, %d epochs "
          "(min %d, eta %d), data %s" % (base.search.searcher, F.minutes, max_epochs,
                                         base.search.min_epochs, base.search.eta,
                                         base.data.data_path), flush=True)
    rungs = config_rung_epochs(base)
    for kind in ["hyperband"] + [k for k in F.bench_schedulers if k != "hyperband"]:
        n, trained = cycle_cost(kind, rungs, base.search.eta)
        print("  %s over rungs %s: %d candidates per %d epochs, at most %.2fx plain's "
              "candidates by the bracket arithmetic" % (kind, rungs, n, trained,
                                                       max_epochs * n / trained), flush=True)
    rows = []
    for seed in [int(s) for s in F.seeds.split(",")]:
        for scheduler in ["none"] + list(F.bench_schedulers):
            cfg = dataclasses.replace(base, search=dataclasses.replace(
                base.search, seed=seed, scheduler=scheduler))
            name = "plain" if scheduler == "none" else scheduler
            keep = os.path.join(F.keep_logs, "%s_s%d" % (name, seed)) if F.keep_logs else ""
            rows.append(summarize(name, seed, run_real_search(cfg, keep_log_dir=keep),
                                  max_epochs))
    print()
    print("| run | seed | evaluations | candidates | epochs trained | best val acc "
          "(its epochs) | its test acc | best full-budget val acc |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %d | %d | %d | %d | %s (%s) | %s | %s |" % (
            r["run"], r["seed"], r["evaluations"], r["candidates"], r["epochs_trained"],
            _f(r["best_val"]), r["best_val_epochs"], _f(r["best_test"]),
            _f(r["best_full_val"])))
    verdicts = []
    plains = {r["seed"]: r for r in rows if r["run"] == "plain"}
    for sched in (r for r in rows if r["run"] != "plain"):
        plain = plains[sched["seed"]]
        ratio = sched["candidates"] / max(plain["candidates"], 1)
        at_least = (sched["best_val"] or 0) >= (plain["best_val"] or 0)
        verdicts.append({"run": sched["run"], "seed": plain["seed"],
                         "candidates_ratio": round(ratio, 2), "val_at_least_plain": at_least,
                         "target_met": ratio >= 3 and at_least})
        print("%s seed %d: %.2fx the candidates of plain, best val acc %s plain's -> target "
              "%s" % (sched["run"], plain["seed"], ratio, ">=" if at_least else "<",
                      "met" if verdicts[-1]["target_met"] else "NOT met"))
    if F.keep_logs:
        from autodl_design.search.compare import write_compare
        folders = [os.path.join(F.keep_logs, "%s_s%d" % (r["run"], r["seed"])) for r in rows]
        print("comparison: %s" % write_compare(folders, os.path.join(F.keep_logs,
                                                                     "compare"))[0])
    from autodl_design.records import atomic_write_json
    atomic_write_json(F.bench_out, {
        "command": " ".join(sys.argv), "config": base.to_dict(), "minutes": F.minutes,
        "rows": rows, "verdicts": verdicts, "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M")})
    print("wrote %s" % F.bench_out)


if __name__ == "__main__":
    app.run(main)
