"""Benchmark of the searchers (rl, random, evolution) and of median early termination.

Part 1: the three searchers at an equal evaluation budget on the same data,
over ``--bench_seeds`` seeds: best feasible validation accuracy at the end and
the evaluation index at which each first reached it; a plot of the running
best (mean over seeds) per searcher.

Part 2: the same random-search candidates (same seed) with and without
``--early_termination median``: wall time saved and best accuracy lost.

    .venv/bin/python benchmarks/bench_searchers.py --num_models 40 --early_stop 4 \
        --images_per_class 100 --bench_seeds 3

Every other flag of main.py applies. Prints tables, writes JSON (default
benchmarks/results/searchers.json) and a PNG next to it.
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

absl_flags.DEFINE_string("bench_out", os.path.join(ROOT, "benchmarks", "results",
                                                   "searchers.json"), "JSON output.")
absl_flags.DEFINE_integer("bench_seeds", 3, "Seeds 0..n-1 per searcher.", lower_bound=1)
absl_flags.DEFINE_list("searchers", ["rl", "random", "evolution"], "Searchers to compare.")
absl_flags.DEFINE_boolean("early_termination_part", True, "Also run part 2.")


def run_search(config):
    """Runs one real search; returns (records sorted by index, seconds)."""
    run = run_real_search(config)
    return run["records"], run["result"].seconds


def running_best(recs):
    best, out = float("-inf"), []
    for r in recs:
        acc = r["metrics"].get("val_accuracy")
        if r["status"] in ("ok", "duplicate") and r["feasible"] and isinstance(acc, float):
            best = max(best, acc)
        out.append(best if best > float("-inf") else None)
    return out


def plot_curves(curves, png):
    """Running best per searcher (mean over seeds) against evaluations, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, cs in curves.items():
        n = min(len(c) for c in cs)
        xs, ys = [], []
        for k in range(n):
            vals = [c[k] for c in cs if c[k] is not None]
            if len(vals) == len(cs):
                xs.append(k)
                ys.append(sum(vals) / len(vals))
        ax.plot(xs, ys, label="%s (mean of %d seeds)" % (name, len(cs)))
    ax.set_xlabel("evaluation")
    ax.set_ylabel("best feasible validation accuracy so far")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(png), exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv):
    F = absl_flags.FLAGS
    base = with_default_data(flags.build_config())
    t = base.trainer
    print("searcher benchmark: %d evaluations, width %d, %d x %d cells, %d nodes, %d epochs, "
          "%d images/class, trainers %s, data %s" % (
              base.search.num_models, t.width, t.num_stages, t.num_cells, base.agent.num_nodes,
              t.early_stop, base.data.images_per_class,
              ",".join(base.devices.trainer_devices), base.data.data_path), flush=True)
    part1 = []
    curves = {}
    for name in F.searchers:
        for seed in range(F.bench_seeds):
            cfg = dataclasses.replace(base, search=dataclasses.replace(
                base.search, searcher=name, seed=seed))
            recs, secs = run_search(cfg)
            curve = running_best(recs)
            final = curve[-1]
            first = next((k for k, v in enumerate(curve) if v == final), None)
            row = {"searcher": name, "seed": seed, "evaluations": len(recs),
                   "best_val_accuracy": final, "first_index_at_best": first,
                   "seconds": round(secs, 1),
                   "duplicates": sum(r["status"] == "duplicate" for r in recs)}
            part1.append(row)
            curves.setdefault(name, []).append(curve)
            print("  %-9s seed %d: best %.4f first at #%s, %d duplicates, %.0f s"
                  % (name, seed, final or float("nan"), first, row["duplicates"], secs),
                  flush=True)
    print()
    print("| searcher | seeds | best val acc (mean) | per seed | first reached at (per seed) |")
    print("|---|---|---|---|---|")
    summary = {}
    for name in F.searchers:
        rows = [r for r in part1 if r["searcher"] == name]
        vals = [r["best_val_accuracy"] for r in rows if r["best_val_accuracy"] is not None]
        mean = sum(vals) / len(vals) if vals else float("nan")
        summary[name] = mean
        print("| %s | %d | %.4f | %s | %s |" % (
            name, len(rows), mean, ", ".join("%.4f" % v for v in vals),
            ", ".join(str(r["first_index_at_best"]) for r in rows)))
    png = os.path.splitext(F.bench_out)[0] + ".png"
    if curves:
        plot_curves(curves, png)


    part2 = []
    if F.early_termination_part:
        for seed in range(F.bench_seeds):
            for mode in ("none", "median"):
                cfg = dataclasses.replace(base, search=dataclasses.replace(
                    base.search, searcher="random", seed=seed, early_termination=mode))
                recs, secs = run_search(cfg)
                stopped = sum(bool(r["metrics"].get("stopped_early")) for r in recs)
                epochs = sum(r["metrics"]["epochs"] for r in recs
                             if r["status"] == "ok" and isinstance(r["metrics"].get("epochs"), int))
                part2.append({"seed": seed, "early_termination": mode, "seconds": round(secs, 1),
                              "best_val_accuracy": running_best(recs)[-1],
                              "stopped_early": stopped, "epochs_trained": epochs,
                              "evaluations": len(recs)})
                print("  random seed %d, early termination %-6s: %.0f s, best %.4f, %d stopped, "
                      "%d epochs" % (seed, mode, secs, part2[-1]["best_val_accuracy"], stopped,
                                     epochs), flush=True)
        print()
        print("| seed | wall time none -> median | saved | best acc none -> median | "
              "candidates stopped |")
        print("|---|---|---|---|---|")
        for seed in range(F.bench_seeds):
            a, b = [r for r in part2 if r["seed"] == seed]
            print("| %d | %.0f s -> %.0f s | %.0f%% | %.4f -> %.4f | %d of %d |" % (
                seed, a["seconds"], b["seconds"], 100 * (1 - b["seconds"] / a["seconds"]),
                a["best_val_accuracy"], b["best_val_accuracy"], b["stopped_early"],
                b["evaluations"]))
    from autodl_design.records import atomic_write_json
    atomic_write_json(F.bench_out, {"config": base.to_dict(), "part1": part1,
                                    "mean_best": summary, "part2": part2,
                                    "date": time.strftime("%Y-%m-%d %H:%M")})
    print("wrote %s%s" % (F.bench_out, " and %s" % png if curves else ""))


if __name__ == "__main__":
    app.run(main)
