"""Pareto search on NAS-Bench-201: nsga2 against random search, by the hypervolume of the front.

Objectives: maximise validation accuracy (``val_acc_12ep``, %) and minimise
Raspberry Pi 4 latency (ms, the table's ``--device`` column). Per run a
searcher proposes one cell at a time; a new cell is one evaluation (a
repeated cell costs nothing and is told its result again) until
``--evaluations`` distinct cells are evaluated. NSGA-II
(``optuna_searchers.NSGA2Searcher``, population ``--population``) learns
from records as the search loop hands them (``observe_records``); random
search is ``searchers.RandomSearcher``.

Hypervolume: the area dominated by the front of the evaluated cells and
bounded by a reference point, in accuracy-% x ms and as a share of the
hypervolume of the table's exact front (1.0 = the whole true front found).
Two reference points: ``median`` (the headline: the table's median
``val_acc_12ep`` and median latency, so only cells better than a typical
cell in both objectives count, which is where the searchers differ) and
``worst`` (the table's lowest accuracy and highest latency: every cell
counts, and the bulk of the area is won by any search).

    .venv/bin/python benchmarks/bench_pareto.py --runs 20

Prints a table and writes JSON (default benchmarks/results/pareto_nb201.json).
"""
import argparse
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from autodl_design import nb201  # noqa: E402
from autodl_design.records import atomic_write_json  # noqa: E402

SEARCHERS = ("nsga2", "random")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="Runs per searcher (seeds seed..).")
    p.add_argument("--evaluations", type=int, default=100, help="Distinct cells per run.")
    p.add_argument("--searchers", default="nsga2,random", help="Comma-separated: nsga2, random.")
    p.add_argument("--device", default="raspi4", choices=list(nb201.LATENCY_DEVICES),
                   help="Latency column.")
    p.add_argument("--population", type=int, default=20, help="NSGA-II population.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the first run.")
    p.add_argument("--table", default="", help="Table file ('' = the shipped copy).")
    p.add_argument("--max_proposals", type=int, default=5000,
                   help="Ends a run after this many proposals (repeats included).")
    p.add_argument("--bench_out", default=os.path.join(ROOT, "benchmarks", "results",
                                                       "pareto_nb201.json"), help="JSON output.")
    args = p.parse_args(argv)
    args.searchers = [s for s in args.searchers.split(",") if s]
    unknown = [s for s in args.searchers if s not in SEARCHERS]
    if unknown or not args.searchers:
        p.error("--searchers: unknown %s; use %s" % (unknown, ",".join(SEARCHERS)))
    return args


def front_mask(acc: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Which points no other point dominates (higher-or-equal accuracy and lower-or-equal cost,
    one strictly); equal points are all kept.

    Args:
      acc, cost: float [N].

    Returns:
      bool [N].
    """
    ge = (acc[None, :] >= acc[:, None]) & (cost[None, :] <= cost[:, None])  # [i, j]: j >= i
    strict = (acc[None, :] > acc[:, None]) | (cost[None, :] < cost[:, None])
    return ~(ge & strict).any(axis=1)


def hypervolume(acc: np.ndarray, cost: np.ndarray, ref: Tuple[float, float]) -> float:
    """Area dominated by the points within the reference point (ref_acc, ref_cost).

    Args:
      acc, cost: float [N] (maximise accuracy, minimise cost).
      ref: the worst corner; points beyond it add nothing.
    """
    ok = (acc > ref[0]) & (cost < ref[1])
    acc, cost = acc[ok], cost[ok]
    area, best = 0.0, ref[0]
    for i in np.lexsort((-acc, cost)):
        if acc[i] > best:
            area += (ref[1] - cost[i]) * (acc[i] - best)
            best = acc[i]
    return float(area)


def make_searcher(name: str, seed: int, population: int):
    space = nb201.NB201Space()
    if name == "nsga2":
        from autodl_design.search.optuna_searchers import NSGA2Searcher
        return NSGA2Searcher(space, seed, "latency", population_size=population)
    from autodl_design.search.searchers import RandomSearcher
    return RandomSearcher(space, seed)


def one_run(name: str, seed: int, table: nb201.NB201Table, args) -> Dict:
    """One search: the evaluated rows until ``args.evaluations`` distinct cells."""
    val = table.columns["val_acc_12ep"]
    lat = table.latency_ms(args.device)
    searcher = make_searcher(name, seed, args.population)
    evaluated: List[int] = []
    seen = set()
    proposals = 0
    while len(evaluated) < args.evaluations and proposals < args.max_proposals:
        cands = searcher.propose(1)
        row = int(table.rows(np.stack([c.tokens for c in cands]))[0])
        proposals += 1
        if row not in seen:
            seen.add(row)
            evaluated.append(row)
        rec = {"status": "ok", "reward": val[row] / 100.0,
               "metrics": {"val_accuracy": val[row] / 100.0, "latency_ms": float(lat[row])}}
        if hasattr(searcher, "observe_records"):
            searcher.observe_records(cands, [rec])
        else:
            searcher.observe(cands, [rec["reward"]])
    return {"rows": evaluated, "proposals": proposals}


def summarise(hv: Sequence[float], hv_share: Sequence[float], front: Sequence[int],
              proposals: Sequence[int], seconds: float) -> Dict:
    return {"runs": len(hv), "mean_hv": float(np.mean(hv)), "std_hv": float(np.std(hv)),
            "mean_hv_share": float(np.mean(hv_share)), "std_hv_share": float(np.std(hv_share)),
            "mean_front_size": float(np.mean(front)), "mean_proposals": float(np.mean(proposals)),
            "hv_per_run": [float(h) for h in hv], "seconds": seconds}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        table = nb201.load_table(args.table if args.table else None)
    except ValueError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    val = table.columns["val_acc_12ep"]
    lat = table.latency_ms(args.device)
    refs = {"median": (float(np.median(val)), float(np.median(lat))),
            "worst": (float(val.min()), float(lat.max()))}
    true_hv = {k: hypervolume(val, lat, ref) for k, ref in refs.items()}
    print("NAS-Bench-201 Pareto benchmark: %d runs, %d evaluations each, val_acc_12ep vs %s "
          "latency; reference points %s, exact front hypervolumes %s"
          % (args.runs, args.evaluations, args.device, refs, true_hv), flush=True)
    out = {"evaluations": args.evaluations, "device": args.device, "seed": args.seed,
           "population": args.population,
           "reference_points": {k: {"val_acc": r[0], "latency_ms": r[1]}
                                for k, r in refs.items()},
           "exact_front_hv": true_hv, "table": table.path, "searchers": {}}
    for name in args.searchers:
        t0 = time.time()
        hv = {k: [] for k in refs}
        front, props = [], []
        for r in range(args.runs):
            res = one_run(name, args.seed + r, table, args)
            rows = np.asarray(res["rows"])
            for k, ref in refs.items():
                hv[k].append(hypervolume(val[rows], lat[rows], ref))
            front.append(int(front_mask(val[rows], lat[rows]).sum()))
            props.append(res["proposals"])
        out["searchers"][name] = {k: summarise(hv[k], np.asarray(hv[k]) / true_hv[k], front,
                                               props, time.time() - t0) for k in refs}
        s = out["searchers"][name]["median"]
        print("  %-6s %d runs in %.1f s: hypervolume (median reference) %.1f +- %.1f (%.4f of "
              "the exact front's)" % (name, args.runs, s["seconds"], s["mean_hv"], s["std_hv"],
                                       s["mean_hv_share"]), flush=True)
        out["date"] = time.strftime("%Y-%m-%d %H:%M")
        atomic_write_json(args.bench_out, out)
    print()
    print("| searcher | reference point | runs | evaluations | hypervolume (acc-% x ms) | "
          "share of the exact front's | front size | proposals |")
    print("|---|---|---|---|---|---|---|---|")
    for name, by_ref in out["searchers"].items():
        for k, s in by_ref.items():
            print("| %s | %s (%.2f %%, %.2f ms) | %d | %d | %.1f +- %.1f | %.4f +- %.4f | %.1f | "
                  "%.0f |" % (name, k, refs[k][0], refs[k][1], s["runs"], args.evaluations,
                              s["mean_hv"], s["std_hv"], s["mean_hv_share"], s["std_hv_share"],
                              s["mean_front_size"], s["mean_proposals"]))
    print("wrote %s" % args.bench_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
