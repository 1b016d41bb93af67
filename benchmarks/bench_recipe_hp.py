"""Training hyperparameters searched over a fixed cell against the default recipe, equal budgets.

On real data (the embedded Fashion-MNIST, cpu preset sizes unless size flags
say otherwise) and one fixed cell (``--arch``, examples/baseline.json), per
seed s in 0..``--bench_seeds``-1, ``--evaluations`` N evaluations each:

* default: the trainer's default recipe (SGD with Nesterov momentum, lr 0.1,
  weight decay 1e-4, batch 128, no clip, no dropout) trained N times with
  training seeds s N .. s N + N - 1 (its best validation accuracy: what N
  evaluations buy without a search);
* random: N recipes drawn by ``autodl_design.recipe.RecipeSpace`` (the fixed
  cell, the decisions of ``SPACE``; numpy seed s) and trained with the same
  training seeds, through the search's evaluator (``TrainerEvaluator``).

Reports per seed the best validation accuracy of each arm (and the test
accuracy of that candidate); target: random beats default on every seed.
The search driver's ``--search_space`` is built on another branch, so the
random search is done here with the same evaluator.

    nice -n 10 .venv/bin/python benchmarks/bench_recipe_hp.py

Prints a table and writes benchmarks/results/recipe_hp.json.
"""
import dataclasses
import json
import os
import sys
import time

from absl import app
from absl import flags as absl_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import flags  # noqa: E402
from benchmarks.common import with_default_data  # noqa: E402

SPACE = {"learning_rate": [0.01, 0.05, 0.1, 0.2], "weight_decay": [0.0, 1e-4, 5e-4],
         "optimizer": ["sgd", "adam", "rmsprop"], "batch_size": [32, 64, 128],
         "grad_clip": [0.0, 5.0], "dropout": [0.0, 0.1]}

absl_flags.DEFINE_string("bench_out", os.path.join(ROOT, "benchmarks", "results",
                                                   "recipe_hp.json"), "JSON output.")
absl_flags.DEFINE_string("arch", os.path.join(ROOT, "examples", "baseline.json"),
                         "The fixed cell.")
absl_flags.DEFINE_integer("evaluations", 4, "Evaluations per arm and seed.", lower_bound=1)
absl_flags.DEFINE_integer("bench_seeds", 3, "Seeds 0..n-1.", lower_bound=1)
absl_flags.DEFINE_integer("bench_threads", 1, "CPU threads of the evaluator.", lower_bound=1)


def best_of(rows):
    ok = [r for r in rows if r["status"] == "ok"]
    return max(ok, key=lambda r: r["val_accuracy"]) if ok else None


def main(argv):
    del argv
    import numpy as np
    from autodl_design.arch import Architecture
    from autodl_design.recipe import Recipe, RecipeSpace, parse_decisions
    from trainer.evaluate import TrainerEvaluator

    f = absl_flags.FLAGS
    config = with_default_data(flags.build_config())
    arch = Architecture.load(f.arch)
    evaluator = TrainerEvaluator(config.data.data_path, config.to_dict())
    evaluator.setup("cpu", f.bench_threads)
    space = RecipeSpace(None, parse_decisions(SPACE), fixed_cell=arch)
    n = f.evaluations
    seeds = []
    t0 = time.time()
    for s in range(f.bench_seeds):
        rng = np.random.default_rng(s)
        arms = {"default": [Recipe()] * n, "random": [space.sample(rng).recipe for _ in range(n)]}
        rows = {}
        for arm, recipes in arms.items():
            rows[arm] = []
            for i, recipe in enumerate(recipes):
                cand = dict(arch.to_dict(), recipe=recipe.to_dict())
                m = evaluator.evaluate(cand, i, s * n + i, {})
                row = {"recipe": recipe.to_dict(), "training_seed": s * n + i,
                       "status": m["status"], "reason": m.get("reason", ""),
                       "val_accuracy": m.get("val_accuracy", 0.0),
                       "test_accuracy": m.get("test_accuracy", 0.0),
                       "seconds": m.get("seconds", 0.0)}
                rows[arm].append(row)
                print("  seed %d %-7s %d %-110s %-6s val %.4f %4.0f s" % (
                    s, arm, i, json.dumps(row["recipe"], sort_keys=True), row["status"],
                    row["val_accuracy"], row["seconds"]), flush=True)
        best = {arm: best_of(r) for arm, r in rows.items()}
        seeds.append({"seed": s, "rows": rows, "best": best})

    print("\n%-5s %-22s %-22s %-7s" % ("seed", "default best val/test", "random best val/test",
                                        "winner"))
    wins = 0
    for entry in seeds:
        d, r = entry["best"]["default"], entry["best"]["random"]
        dv = d["val_accuracy"] if d else 0.0
        rv = r["val_accuracy"] if r else 0.0
        wins += rv > dv
        print("%-5d %.4f / %.4f        %.4f / %.4f        %s" % (
            entry["seed"], dv, d["test_accuracy"] if d else 0.0, rv,
            r["test_accuracy"] if r else 0.0, "random" if rv > dv else "default"))
        if r:
            print("      random's best recipe: %s" % json.dumps(r["recipe"], sort_keys=True))
    mean = {arm: float(np.mean([(e["best"][arm] or {"val_accuracy": 0.0})["val_accuracy"]
                                for e in seeds])) for arm in ("default", "random")}
    print("mean best val: default %.4f, random %.4f; random wins %d of %d seeds (%d evaluations "
          "per arm and seed, %.0f s)" % (mean["default"], mean["random"], wins, len(seeds), n,
                                         time.time() - t0))
    out = {"benchmark": "recipe_hp", "time": time.strftime("%Y-%m-%d %H:%M:%S"),
           "space": SPACE, "arch": os.path.relpath(f.arch, ROOT),
           "trainer": dataclasses.asdict(config.trainer), "data": config.data.data_path,
           "evaluations": n, "seeds": seeds, "mean_best_val": mean, "random_wins": wins,
           "seconds": time.time() - t0,
           "search_method": "random search in this script (RecipeSpace.sample, same evaluator); "
                            "the driver's --search_space is not on this branch"}
    os.makedirs(os.path.dirname(f.bench_out), exist_ok=True)
    with open(f.bench_out, "w") as fh:
        json.dump(out, fh, indent=1)
    print("wrote %s" % f.bench_out)


if __name__ == "__main__":
    app.run(main)
