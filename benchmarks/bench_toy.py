"""Benchmark of random search and evolution on the toy objective (autodl_design/toy.py).

For each search-space file (its decisions over the fixed cell of
examples/baseline.json, so the toy optimum is known by enumeration) and each
searcher, over ``--bench_seeds`` seeds: the evaluation at which the search
first reached the optimum (or "not reached" within ``--bench_budget``). The
real loop, records and duplicates are used; only training is replaced by the
toy formula, in this process.

    nice -n 10 .venv/bin/python benchmarks/bench_toy.py --bench_seeds 10 --bench_budget 150

Prints a table and writes JSON (default benchmarks/results/toy.json).
"""
import dataclasses
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags as absl_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from autodl_design import config as cfg, recipe, records, toy  # noqa: E402
from autodl_design.arch import Architecture  # noqa: E402
from autodl_design.search import searchers  # noqa: E402
from autodl_design.search.inline_pool import InlinePool  # noqa: E402
from autodl_design.search.loop import Search  # noqa: E402

FLAGS = absl_flags.FLAGS
absl_flags.DEFINE_string("bench_out", os.path.join(ROOT, "benchmarks", "results", "toy.json"),
                         "JSON output.")
absl_flags.DEFINE_integer("bench_seeds", 10, "Seeds 0..n-1 per searcher and space.",
                          lower_bound=1)
absl_flags.DEFINE_integer("bench_budget", 150, "Evaluations per search.", lower_bound=1)
absl_flags.DEFINE_list("bench_spaces", ["examples/scale.json", "examples/recipe.json"],
                       "Search-space files; their decisions are searched over the fixed "
                       "cell of examples/baseline.json.")
SEARCHERS = ("random", "evolution")


def fixed_cell_space(path):
    """(search-space dict with the baseline cell fixed, number of candidates)."""
    decisions, _ = recipe.load_search_space(os.path.join(ROOT, path))
    cell = Architecture.load(os.path.join(ROOT, "examples", "baseline.json"))
    size = 1
    for d in decisions:
        size *= len(d.choices)
    return recipe.space_to_dict(decisions, cell), size


def optimum(space):
    """The best toy accuracy of ``space`` by enumeration."""
    decisions, cell = recipe.parse_decisions(space), recipe.parse_cell(space)
    return max(toy.toy_accuracy(cell, recipe.Recipe(tuple(zip([d.name for d in decisions], v))),
                                decisions, ()) for v in
               itertools.product(*(d.choices for d in decisions)))


def first_hit(space, searcher, seed, budget):
    """The 1-based evaluation at which the search first recorded the optimum, or None."""
    tmp = tempfile.mkdtemp(prefix="bench-toy-")
    config = cfg.Config(
        data=cfg.DataConfig(), trainer=cfg.TrainerConfig(early_stop=1),
        agent=cfg.AgentConfig(batch_size=10), constraints=cfg.ConstraintConfig(),
        devices=cfg.DeviceConfig(),
        search=cfg.SearchConfig(num_models=budget, log_dir=os.path.join(tmp, "log"),
                                seed=seed, searcher=searcher, search_space=space,
                                evaluator="toy"))
    best = optimum(space)
    pool = InlinePool(toy.ToyEvaluator(config.to_dict()))
    pool.start()
    s = searchers.make_space(config)
    try:
        Search(config, s, searchers.make_searcher(config, s), pool, log=lambda line: None).run()
        trials = records.read_trials(os.path.join(tmp, "log", records.TRIALS_FILE))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    hits = [t["index"] for t in trials
            if t["status"] in ("ok", "duplicate") and t["metrics"]["val_accuracy"] >= best - 1e-12]
    return min(hits) + 1 if hits else None


def main(argv):
    del argv
    rows, t0 = [], time.time()
    for path in FLAGS.bench_spaces:
        space, size = fixed_cell_space(path)
        for searcher in SEARCHERS:
            hits = [first_hit(space, searcher, seed, FLAGS.bench_budget)
                    for seed in range(FLAGS.bench_seeds)]
            found = [h for h in hits if h is not None]
            rows.append({"space": path, "candidates": size, "searcher": searcher,
                         "first_hit": hits, "reached": len(found),
                         "median": statistics.median(found) if found else None})
    print("| space | candidates | searcher | reached optimum | median evaluations to it |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| %s | %d | %s | %d/%d within %d | %s |" % (
            r["space"], r["candidates"], r["searcher"], r["reached"], FLAGS.bench_seeds,
            FLAGS.bench_budget, "n/a" if r["median"] is None else "%g" % r["median"]))
    print("(%.0f s)" % (time.time() - t0))
    records.atomic_write_json(FLAGS.bench_out, {
        "command": "benchmarks/bench_toy.py --bench_seeds %d --bench_budget %d"
                   % (FLAGS.bench_seeds, FLAGS.bench_budget),
        "population": cfg.SearchConfig().population, "sample_size": cfg.SearchConfig().sample_size,
        "rows": rows, "seconds": time.time() - t0})


if __name__ == "__main__":
    app.run(main)
