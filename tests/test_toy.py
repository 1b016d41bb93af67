"""The toy objective (autodl_design/toy.py): its known optimum, and searchers that reach it."""
import dataclasses
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from autodl_design import recipe, records, toy
from autodl_design.arch import Architecture, Cell
from autodl_design.search import searchers
from autodl_design.search.inline_pool import InlinePool
from autodl_design.search.loop import Search
from tests.test_search import ROOT, make_config

BASELINE = os.path.join(ROOT, "examples", "baseline.json")
# A 3 x 3 x 2 scale space over the fixed cell of examples/baseline.json.
SCALE = {"width_mult": [0.5, 1.0, 2.0], "depth": [1, 2, 3], "resolution": [16, 28]}


def toy_config(log_dir, searcher, space, num_models, seed=0, **kwargs):
    config = make_config(log_dir, searcher=searcher, num_models=num_models, seed=seed,
                         devices=("cpu",), **kwargs)
    return dataclasses.replace(config, search=dataclasses.replace(
        config.search, search_space=space, evaluator="toy"))


def fixed_scale_space():
    cell = Architecture.load(BASELINE)
    return recipe.space_to_dict(recipe.parse_decisions(SCALE), cell)


def enumerated_optimum(space):
    """(best accuracy, its recipes) over every candidate of a fixed-cell space."""
    decisions = recipe.parse_decisions(space)
    cell = recipe.parse_cell(space)
    scores = {}
    for values in itertools.product(*(d.choices for d in decisions)):
        r = recipe.Recipe(tuple(zip((d.name for d in decisions), values)))
        scores[values] = toy.toy_accuracy(cell, r, decisions, ("conv_3x3",))
    best = max(scores.values())
    return best, [dict(zip((d.name for d in decisions), v))
                  for v, s in scores.items() if s == best]


def test_the_optimum_by_enumeration_is_the_documented_one():
    space = fixed_scale_space()
    best, argmax = enumerated_optimum(space)
    assert argmax == [toy.optimum_recipe(recipe.parse_decisions(space))]
    assert argmax == [{"width_mult": 1.0, "depth": 2, "resolution": 28}]
    assert toy.peak(0, 3) == 0.0 and toy.peak(1, 3) == 1.0 and toy.peak(1, 2) == 1.0
    assert toy.peak(0, 1) == 1.0 and toy.peak(0, 4) == 0.0 and toy.peak(1, 4) == 0.5
    assert toy.peak(2, 4) == 1.0 and toy.peak(3, 4) == 0.5
    # Costs grow with the network the recipe describes.
    cell = recipe.parse_cell(space)
    small = toy.toy_costs(cell, recipe.Recipe.from_dict({"width_mult": 0.5, "depth": 1,
                                                         "resolution": 16}))
    large = toy.toy_costs(cell, recipe.Recipe.from_dict({"width_mult": 2.0, "depth": 3,
                                                         "resolution": 28}))
    assert large["params"] == small["params"] * 16 * 3
    assert large["latency_ms"] > small["latency_ms"] and large["flops"] > small["flops"]


def test_a_searched_cell_peaks_on_the_target_op():
    decisions = recipe.parse_decisions({"depth": [1, 2]})
    chain = np.eye(3, k=1, dtype=np.int8)
    ops = ("conv_1x1", "conv_3x3", "maxpool_3x3")
    assert toy.target_op(ops) == "conv_3x3" and toy.target_op(("conv_1x1", "avgpool_3x3")) \
        == "conv_1x1"
    best = Architecture(Cell(["conv_3x3"] * 3, chain), Cell(["conv_3x3"] * 3, chain))
    half = Architecture(Cell(["conv_3x3"] * 3, chain), Cell(["conv_1x1"] * 3, chain))
    depth2 = recipe.Recipe.from_dict({"depth": 2})
    assert toy.toy_accuracy(best, depth2, decisions, ops) == pytest.approx(0.9)
    assert toy.toy_accuracy(half, depth2, decisions, ops) == pytest.approx(0.5 + 0.4 * 1.5 / 2)
    assert toy.toy_accuracy(best, recipe.Recipe.from_dict({"depth": 1}), decisions,
                            ops) == pytest.approx(0.5 + 0.4 * 1 / 2)
    with pytest.raises(ValueError, match="recipe decides"):
        toy.toy_accuracy(best, recipe.Recipe.from_dict({"width_mult": 1}), decisions, ops)


@pytest.mark.parametrize("searcher", ["random", "evolution", "rl", "tpe"])
def test_searchers_reach_the_toy_optimum(tmp_path, searcher):
    """Seeds 0, 1 and 2: random search, evolution (population 4, tournament 2), the
    controller (rl, its recipe heads after the fixed cell) and TPE reach the enumerated
    optimum of the 18-candidate space within 30 evaluations
    (measured: first reached at evaluation 5, 1 and 15 by random search, 5, 1 and
    12 by evolution)."""
    space = fixed_scale_space()
    best, argmax = enumerated_optimum(space)
    for seed in range(3):
        log_dir = tmp_path / ("log%d" % seed)
        config = toy_config(log_dir, searcher, space, 30, seed=seed)
        s = searchers.make_space(config)
        pool = InlinePool(toy.ToyEvaluator(config.to_dict()))
        pool.start()
        found = Search(config, s, searchers.make_searcher(config, s), pool,
                       log=lambda line: None).run().best  # the loop without the report
        assert len(records.read_trials(str(log_dir / records.TRIALS_FILE))) == 30
        assert found["reward"] == pytest.approx(best), seed
        assert found["arch"]["recipe"] == argmax[0]


def test_toy_evaluator_from_main_in_worker_processes(tmp_path):
    """``main.py --evaluator toy`` runs the local pool (a worker process) with no data; the
    records' metrics are the toy formula's, the report shows the recipes and scale.png."""
    log = tmp_path / "log"
    r = subprocess.run([sys.executable, "main.py", "--evaluator", "toy", "--search_space",
                        "examples/scale.json", "--searcher", "evolution", "--num_models", "12",
                        "--batch_size", "4", "--population", "4", "--sample_size", "2",
                        "--preset", "cpu", "--trainer_devices", "cpu", "--log_dir", str(log)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "the toy objective" in r.stdout and "recipe: width_mult=" in r.stdout
    config = json.loads((log / records.CONFIG_FILE).read_text())
    space = recipe.parse_decisions(config["search"]["search_space"])
    trials = records.read_trials(str(log / records.TRIALS_FILE))
    assert len(trials) == 12
    for t in trials:
        arch, rec = recipe.split_candidate(t["arch"])
        if t["status"] == "ok":
            assert t["metrics"]["val_accuracy"] == pytest.approx(
                toy.toy_accuracy(arch, rec, space, config["agent"]["ops"]))
            assert t["metrics"]["params"] == toy.toy_costs(arch, rec)["params"]
    report = (log / "report" / "report.md").read_text()
    assert "## Recipes of the top" in report and "| width_mult | depth | resolution |" in report
    assert os.path.getsize(log / "report" / "scale.png") > 1000


@pytest.mark.parametrize("args, words", [
    (["--export_best", "EXPORT"], "--export_best retrains a candidate on the data"),
    (["--method", "darts"], "apply to multi-trial searches"),
    (["--benchmark", "nb201", "--searcher", "random"], "--evaluator apply only to the cell"),
])
def test_toy_evaluator_with_what_it_does_not_apply_to_is_refused(tmp_path, args, words):
    args = [str(tmp_path / "export") if a == "EXPORT" else a for a in args]
    r = subprocess.run([sys.executable, "main.py", "--evaluator", "toy", "--log_dir",
                        str(tmp_path / "log")] + args, cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert not (tmp_path / "log").exists() and not (tmp_path / "export").exists()
