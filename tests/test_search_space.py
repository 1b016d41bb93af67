"""``--search_space FILE.json`` through the search: records, best.json, report, resume, bad input."""
import dataclasses
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from autodl_design import recipe, records
from autodl_design.arch import Architecture
from autodl_design.search import searchers
from autodl_design.search.run_records import SEARCH_SPACE_FILE
from tests.conftest import needs_fmnist
from tests.kill import kill_after_records
from tests.test_bad_input import fake_main, one_line
from tests.test_golden import stable
from tests.test_search import ROOT, make_config, run

EXAMPLES = os.path.join(ROOT, "examples")
BASELINE = os.path.join(EXAMPLES, "baseline.json")
CELL_AND_RECIPE = {"width_mult": [1.0, 2.0], "learning_rate": [0.05, 0.1], "cell": "search"}


def with_space(config, raw):
    """``config`` searching the search-space object ``raw`` (as --search_space gives it)."""
    decisions, cell = recipe.parse_decisions(raw), recipe.parse_cell(raw)
    return dataclasses.replace(config, search=dataclasses.replace(
        config.search, search_space=recipe.space_to_dict(decisions, cell)))


def test_every_example_search_space_loads():
    loaded = 0
    for path in sorted(glob.glob(os.path.join(EXAMPLES, "*.json"))):
        with open(path) as f:
            raw = json.load(f)
        if "normal" in raw:  # an architecture file (baseline.json, chain.json)
            Architecture.load(path)
            continue
        decisions, cell = recipe.load_search_space(path)
        config = with_space(make_config("unused", num_nodes=10), raw)
        space = searchers.make_space(config)
        assert [d.name for d in space.recipe] == [d.name for d in decisions]
        rng = np.random.default_rng(0)
        for _ in range(5):
            cand = space.sample(rng)
            assert space.decode(*space.encode(cand)) == cand
            assert space.from_dict(json.loads(json.dumps(cand.to_dict()))) == cand
            assert json.loads(cand.to_json()) == json.loads(json.dumps(cand.to_dict()))
            if cell is not None:
                assert cand.arch == cell
        loaded += 1
    assert loaded >= 3  # scale.json, recipe.json, scale_and_recipe.json


@pytest.mark.parametrize("searcher", ["random", "evolution"])
def test_records_best_and_report_hold_the_recipe(tmp_path, searcher):
    config = with_space(make_config(tmp_path / "log", searcher=searcher, num_models=12,
                                    num_nodes=3), CELL_AND_RECIPE)
    code, trials, out = run(config)
    assert code == 0 and len(trials) == 12
    space = searchers.make_space(config)
    for t in trials:
        assert set(t["arch"]["recipe"]) == {"width_mult", "learning_rate"}
        assert t["arch"]["recipe"]["width_mult"] in (1.0, 2.0)
        assert t["arch_hash"] == space.from_dict(t["arch"]).hash()
    best = json.loads((tmp_path / "log" / records.BEST_FILE).read_text())
    assert best["arch"]["recipe"] == records.RunState(trials).best["arch"]["recipe"]
    assert "recipe: width_mult=%s, learning_rate=%s" % (
        best["arch"]["recipe"]["width_mult"], best["arch"]["recipe"]["learning_rate"]) in out
    saved = json.loads((tmp_path / "log" / SEARCH_SPACE_FILE).read_text())
    assert saved == config.search.search_space
    report = (tmp_path / "log" / "report" / "report.md").read_text()
    assert "| width_mult | learning_rate |" in report and "scale.png" in report


def test_same_cell_with_another_learning_rate_is_another_candidate(tmp_path):
    raw = {"learning_rate": [0.05, 0.1], "cell": json.loads(open(BASELINE).read())}
    config = with_space(make_config(tmp_path / "log", num_models=8), raw)
    code, trials, _ = run(config)
    assert code == 0
    ok = [t for t in trials if t["status"] == "ok"]
    assert sorted(t["arch"]["recipe"]["learning_rate"] for t in ok) == [0.05, 0.1]
    assert len({t["arch_hash"] for t in ok}) == 2
    assert len({Architecture.from_dict(t["arch"]).hash() for t in ok}) == 1  # one cell
    first = {t["arch"]["recipe"]["learning_rate"]: t["index"] for t in ok}
    for t in trials:
        if t["status"] == "duplicate":  # the same cell and learning rate again
            assert "#%d" % first[t["arch"]["recipe"]["learning_rate"]] in t["reason"]
    assert len(trials) == 8 and len(ok) + sum(t["status"] == "duplicate" for t in trials) == 8


def test_sigkill_then_resume_keeps_the_search_space(tmp_path):
    base = dict(searcher="evolution", num_models=12, batch_size=4, devices=("cpu",))
    ref = with_space(make_config(tmp_path / "ref", **base), CELL_AND_RECIPE)
    code, expected, _ = run(ref)
    assert code == 0
    cfg = with_space(make_config(tmp_path / "killed", **base), CELL_AND_RECIPE)
    kill_after_records([sys.executable, "-m", "tests.fake_search_main",
                        json.dumps(cfg.to_dict()), json.dumps({"delay": 0.4})],
                       tmp_path / "killed", 6)
    assert 6 <= len(records.read_trials(str(tmp_path / "killed" / "trials.jsonl"))) < 12
    # Resuming with another search space, or without one, is refused in one line.
    resumed = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, resume=True))
    other = with_space(resumed, dict(CELL_AND_RECIPE, learning_rate=[0.05]))
    for wrong, words in ((other, "pass --search_space %s" % (
            tmp_path / "killed" / SEARCH_SPACE_FILE)), (
            dataclasses.replace(resumed, search=dataclasses.replace(
                resumed.search, search_space={})), "pass --search_space")):
        r = fake_main(wrong)
        assert r.returncode == 2
        line = one_line(r.stderr)
        assert "another search space" in line and words in line
    code, trials, out = run(resumed)
    assert code == 0 and "Resuming" in out
    assert stable(trials) == stable(expected)  # as if never killed, recipes included


def test_resume_without_a_space_refuses_one(tmp_path):
    config = make_config(tmp_path / "log", num_models=4)
    assert run(config)[0] == 0
    resumed = with_space(dataclasses.replace(config, search=dataclasses.replace(
        config.search, resume=True)), CELL_AND_RECIPE)
    r = fake_main(resumed)
    assert r.returncode == 2 and "remove --search_space" in one_line(r.stderr)


def main_py(args, log_dir):
    return subprocess.run([sys.executable, "main.py", "--log_dir", str(log_dir)] + args,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("raw, words", [
    ({"widht_mult": [1.0]}, "unknown decision 'widht_mult'"),
    ({"depth": []}, "decision 'depth' needs a non-empty list"),
    ({"learning_rate": [0.1, 0.1]}, "decision 'learning_rate' lists a choice twice"),
    ({"resolution": [4, 16]}, "resolution choice 4 must be >= 8"),
    ({"learning_rate": [0.1, 0]}, "learning_rate choice 0 must be > 0"),
    ({"learning_rate": [-0.1]}, "learning_rate choice -0.1 must be > 0"),
    ({"cell": "search"}, "lists no decision"),
])
def test_bad_search_space_file_is_one_line_exit_2(tmp_path, raw, words):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(raw))
    r = main_py(["--search_space", str(path), "--searcher", "random"], tmp_path / "log")
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert words in line and str(path) in line
    assert not (tmp_path / "log").exists()


@pytest.mark.parametrize("args, words", [
    (["--benchmark", "nb201", "--searcher", "random"], "--search_space apply only to the cell"),
    (["--method", "enas"], "apply to multi-trial searches"),
])
def test_search_space_with_what_it_does_not_apply_to_is_refused(tmp_path, args, words):
    r = main_py(["--search_space", os.path.join(EXAMPLES, "scale.json")] + args,
                tmp_path / "log")
    assert r.returncode == 2
    assert words in one_line(r.stderr)
    assert not (tmp_path / "log").exists()


@needs_fmnist
def test_resolution_larger_than_the_images_is_refused(tmp_path, tiny_fmnist):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"resolution": [16, 32]}))
    r = main_py(["--search_space", str(path), "--searcher", "random", "--data_path",
                 tiny_fmnist, "--trainer_devices", "cpu"], tmp_path / "log")
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert "resolution [32] is larger than the dataset's 28-pixel images" in line
    assert not (tmp_path / "log").exists()


def test_a_run_from_before_search_space_resumes(tmp_path):
    """A config.json without search_space and evaluator (written before they existed)
    resumes as the cell search with the trainer it was; a --search_space is refused."""
    config = make_config(tmp_path / "log", num_models=4)
    assert run(config)[0] == 0
    path = tmp_path / "log" / records.CONFIG_FILE
    saved = json.loads(path.read_text())
    del saved["search"]["search_space"], saved["search"]["evaluator"]
    path.write_text(json.dumps(saved))
    more = dataclasses.replace(config, search=dataclasses.replace(
        config.search, resume=True, num_models=8))
    code, trials, out = run(more)
    assert code == 0 and "Resuming" in out and len(trials) == 8
    path.write_text(json.dumps(saved))
    code, _, _ = run(with_space(dataclasses.replace(more, search=dataclasses.replace(
        more.search, num_models=10)), CELL_AND_RECIPE))
    assert code == 2
