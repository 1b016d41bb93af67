"""Benchmark of the one-shot methods against the default multi-trial search.

Runs ``python main.py`` (the defaults: cpu preset, embedded Fashion-MNIST with
300 images per class, 2 trainer workers) once per method and seed, each in a
fresh temporary log_dir, and records wall time (the whole process, data
already prepared), the best stand-alone validation and test accuracy
(best.json), the one-shot phase's share of the time and the Kendall tau of
one-shot score vs stand-alone validation accuracy over the retrained
candidates. The load average before and after every run is recorded: on a
shared machine, timings are only comparable at similar load.

    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_oneshot.py \
        --methods enas,darts --seeds 0,1 [--extra="--oneshot_epochs=2"] [--reference_s 578]

Without multi_trial in --methods, the time target is 1/3 of --reference_s
(the default search's measured wall time). Writes JSON (default
benchmarks/results/oneshot.json; --bench_out) and prints a Markdown table.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from autodl_design import records  # noqa: E402
from autodl_design.search.oneshot_report import kendall_tau, score_pairs  # noqa: E402

ONESHOT_DONE = re.compile(r"retraining the top \d+ one-shot candidates")


def run_one(method: str, seed: int, extra, per_method) -> dict:
    """One ``main.py`` run; its figures as a dict."""
    log_dir = os.path.join(tempfile.mkdtemp(prefix="bench-oneshot-"), "log")
    args = [sys.executable, "main.py", "--method", method, "--seed", str(seed),
            "--log_dir", log_dir] + list(extra) + list(per_method.get(method, []))
    load_before = os.getloadavg()
    t0 = time.time()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    oneshot_s = None
    for line in proc.stdout:
        if oneshot_s is None and ONESHOT_DONE.search(line):
            oneshot_s = time.time() - t0
    err = proc.stderr.read()
    code = proc.wait()
    wall = time.time() - t0
    if code != 0:
        raise SystemExit("%s seed %d failed (exit %d): %s" % (method, seed, code, err[-2000:]))
    trials = records.read_trials(os.path.join(log_dir, records.TRIALS_FILE))
    with open(os.path.join(log_dir, records.BEST_FILE)) as f:
        best = json.load(f)
    pairs = score_pairs(trials)
    tau = kendall_tau([p["oneshot_score"] for p in pairs], [p["val_accuracy"] for p in pairs])
    row = {"method": method, "seed": seed, "args": args[2:], "wall_s": round(wall, 1),
           "oneshot_phase_s": None if oneshot_s is None else round(oneshot_s, 1),
           "evaluations": len(trials),
           "best_val_accuracy": best["metrics"]["val_accuracy"],
           "best_test_accuracy": best["metrics"]["test_accuracy"],
           "best_oneshot_score": best["metrics"].get("oneshot_score"),
           "kendall_tau": tau, "pairs": pairs,
           "load_avg_before": [round(x, 2) for x in load_before],
           "load_avg_after": [round(x, 2) for x in os.getloadavg()], "log_dir": log_dir}
    print("%-11s seed %d: %6.1f s (one-shot phase %s s), best val %.3f test %.3f, tau %s, "
          "load %.2f -> %.2f" % (method, seed, wall, row["oneshot_phase_s"],
                                 row["best_val_accuracy"], row["best_test_accuracy"],
                                 "-" if tau is None else "%.2f" % tau, load_before[0],
                                 row["load_avg_after"][0]), flush=True)
    return row


def table(rows, reference_s: float, reference_val: float) -> str:
    lines = ["| method | seed | wall time | one-shot phase | <= 1/3 of %.0f s | best val | "
             "best test | >= %.3f val | Kendall tau | load avg (1 min) before -> after |"
             % (reference_s, reference_val), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %d | %.0f s | %s | %s | %.3f | %.3f | %s | %s | %.1f -> %.1f |" % (
            r["method"], r["seed"], r["wall_s"],
            "-" if r["oneshot_phase_s"] is None else "%.0f s" % r["oneshot_phase_s"],
            "yes" if r["wall_s"] <= reference_s / 3 else "no", r["best_val_accuracy"],
            r["best_test_accuracy"], "yes" if r["best_val_accuracy"] >= reference_val else "no",
            "-" if r["kendall_tau"] is None else "%.2f" % r["kendall_tau"],
            r["load_avg_before"][0], r["load_avg_after"][0]))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="enas,darts")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--extra", default="", help="more main.py flags for every run")
    p.add_argument("--darts_extra", default="", help="more main.py flags for darts runs")
    p.add_argument("--reference_s", type=float, default=578.0,
                   help="wall time of the default multi-trial search (README: 9 min 38 s)")
    p.add_argument("--reference_val", type=float, default=0.733,
                   help="its best validation accuracy (README: 0.733)")
    p.add_argument("--bench_out", default=os.path.join(ROOT, "benchmarks", "results",
                                                       "oneshot.json"))
    a = p.parse_args(argv)
    extra = a.extra.split()
    per_method = {"darts": a.darts_extra.split()}
    rows = []
    for method in a.methods.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            rows.append(run_one(method, seed, extra, per_method))
            text = write(rows, a)  # after every run: a stopped benchmark keeps its rows
    print(text)
    return 0


def write(rows, a) -> str:
    """Writes the JSON of ``rows`` to ``a.bench_out``; returns the Markdown table."""
    ref = [r for r in rows if r["method"] == "multi_trial"]
    reference_s = sum(r["wall_s"] for r in ref) / len(ref) if ref else a.reference_s
    reference_val = max(r["best_val_accuracy"] for r in ref) if ref else a.reference_val
    text = table(rows, reference_s, reference_val)
    records.atomic_write_json(a.bench_out, {
        "reference_s": reference_s, "reference_val": reference_val,
        "reference_measured_here": bool(ref), "cores": os.cpu_count(), "rows": rows,
        "table": text})
    return text


if __name__ == "__main__":
    sys.exit(main())
