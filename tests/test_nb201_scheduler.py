"""Epoch-budget schedulers on NAS-Bench-201: the table's 12 and 200 epochs as rungs.

Checked against the shipped CSV rows (read here with csv and gzip) and through
whole ``main.py --benchmark nb201 --scheduler`` runs and the benchmark script.
"""
import csv
import dataclasses
import gzip
import json
import os
import subprocess
import sys

import pytest

from autodl_design import nb201, records
from autodl_design.config import ConstraintConfig
from autodl_design.search import schedulers
from autodl_design.search.benchmark import BenchmarkEvaluator
from tests.conftest import ROOT
from tests.kill import kill_after_records
from tests.test_optuna import comparable  # the records of a log folder, by index, without times

BUDGET = 12000.0


@pytest.fixture(scope="module")
def csv_rows():
    """index -> the shipped table's CSV row (a dict of strings), read without nb201.py."""
    with gzip.open(nb201.TABLE_PATH, "rt", newline="") as f:
        return {int(r["index"]): r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def evaluator():
    ev = nb201.TableEvaluator()
    ev.setup("cpu", 1)
    return ev


def by_hand(row):
    """(val 12 ep, val 200 ep, cost 12 ep, cost 200 ep, cost 200 ep continued) of a CSV row."""
    seeds = [float(v) for v in row["val_acc_200ep_seeds"].split(";")]
    epoch, val_s = float(row["train_s_per_epoch"]), float(row["val_eval_s"])
    return (float(row["val_acc_12ep"]) / 100, sum(seeds) / len(seeds) / 100,
            12 * epoch + val_s, 200 * epoch + val_s, 188 * epoch + val_s)


@pytest.mark.parametrize("index", [0, 6111, 15624])
def test_evaluator_fidelities_and_costs_are_the_csv_rows(csv_rows, evaluator, index):
    row = csv_rows[index]
    val12, val200, cost12, cost200, cost_continued = by_hand(row)
    cell = {"arch_str": row["arch_str"]}
    plain = evaluator.evaluate(cell, 0, 0, {})
    assert "epochs" not in plain and "resumed_at_epoch" not in plain  # records as before
    assert plain["val_accuracy"] == pytest.approx(val12, rel=1e-12)
    assert plain["simulated_seconds"] == pytest.approx(cost12, rel=1e-12)
    assert plain["test_accuracy"] == pytest.approx(float(row["test_acc_200ep"]) / 100)
    rung0 = evaluator.evaluate(cell, 0, 0, {"epochs": 12, "save_state": "/nowhere/0.state",
                                            "continue_from": ""})
    assert rung0 == dict(plain, epochs=12, resumed_at_epoch=0)
    fresh = evaluator.evaluate(cell, 0, 0, {"epochs": 200, "save_state": "",
                                            "continue_from": ""})
    assert fresh["val_accuracy"] == pytest.approx(val200, rel=1e-12) != val12
    assert fresh["simulated_seconds"] == pytest.approx(cost200, rel=1e-12)
    assert fresh["epochs"] == 200 and fresh["resumed_at_epoch"] == 0
    continued = evaluator.evaluate(cell, 1, 0, {"epochs": 200, "save_state": "",
                                                "continue_from": "/nowhere/0.state"})
    assert continued["simulated_seconds"] == pytest.approx(cost_continued, rel=1e-12)
    assert continued["resumed_at_epoch"] == 12
    assert dict(continued, simulated_seconds=0, resumed_at_epoch=0) == \
        dict(fresh, simulated_seconds=0)
    # Through the benchmark's gate the record's metrics carry the epochs like the trainer's.
    gated = BenchmarkEvaluator(evaluator, ConstraintConfig()).evaluate(
        cell, 1, 0, {"epochs": 200, "save_state": "", "continue_from": "/nowhere/0.state"})
    assert gated["epochs"] == 200 and gated["resumed_at_epoch"] == 12
    assert gated["seconds"] == continued["simulated_seconds"]


def test_evaluator_refuses_epochs_the_table_does_not_hold(evaluator, csv_rows):
    cell = {"arch_str": csv_rows[0]["arch_str"]}
    for epochs in (1, 50, 199):
        with pytest.raises(ValueError, match="12 and 200 epochs, not %d" % epochs):
            evaluator.evaluate(cell, 0, 0, {"epochs": epochs, "save_state": "",
                                            "continue_from": ""})
    with pytest.raises(ValueError, match="lowest fidelity"):
        evaluator.evaluate(cell, 0, 0, {"epochs": 12, "save_state": "", "continue_from": "x"})


def test_the_rungs_of_an_nb201_run_are_the_tables_fidelities(tmp_path):
    from tests.test_search import make_config
    c = make_config(tmp_path, searcher="random")
    for eta in (2, 3, 4):
        nb = dataclasses.replace(c, search=dataclasses.replace(
            c.search, benchmark="nb201", scheduler="successive_halving", min_epochs=1, eta=eta))
        assert schedulers.config_rung_epochs(nb) == [12, 200] == list(nb201.FIDELITIES)
        assert schedulers.bracket_plan("successive_halving", 5, [12, 200], eta) == \
            [(eta, 12), (1, 200)]
    cell_space = dataclasses.replace(c, search=dataclasses.replace(c.search, min_epochs=1,
                                                                   eta=3))
    assert schedulers.config_rung_epochs(cell_space) == schedulers.rung_epochs(
        1, c.trainer.early_stop, 3)
    # Li et al.'s brackets for 2 rungs: eta cells at 12 epochs then the best at 200, then
    # 2 cells evaluated at 200 epochs, then again.
    assert [schedulers.bracket_plan("hyperband", b, [12, 200], 3) for b in range(3)] == \
        [[(3, 12), (1, 200)], [(2, 200)], [(3, 12), (1, 200)]]


def main_py(log, searcher, scheduler, *extra, seed=0, budget=BUDGET):
    return subprocess.run(
        [sys.executable, "main.py", "--benchmark", "nb201", "--searcher", searcher,
         "--scheduler", scheduler, "--max_time", str(int(budget)), "--seed", str(seed),
         "--log_dir", str(log)] + list(extra), cwd=ROOT, capture_output=True, text=True,
        timeout=300)


def trials(log):
    return sorted(records.read_trials(os.path.join(str(log), "trials.jsonl")),
                  key=lambda t: t["index"])


@pytest.fixture(scope="module")
def sh_run(tmp_path_factory):
    log = tmp_path_factory.mktemp("sh") / "log"
    return main_py(log, "random", "successive_halving"), log


def test_successive_halving_promotes_the_best_of_three_to_200_epochs(sh_run, csv_rows):
    r, log = sh_run
    assert r.returncode == 0, r.stderr[-2000:]
    assert "scheduler successive_halving (rungs at the table's 12 and 200 epochs, eta 3)" in \
        r.stdout.splitlines()[0]
    ts = trials(log)
    assert [t["index"] for t in ts] == list(range(len(ts)))
    by = {t["index"]: t for t in ts}
    brackets = sorted({t["rung"]["bracket"] for t in ts})
    assert len(brackets) >= 3
    promoted = 0
    for t in ts:
        assert t["status"] == "ok"  # random search on 15,625 cells: no repeat here
        val12, val200, cost12, _, cost_continued = by_hand(csv_rows[t["metrics"]["nb201_index"]])
        assert t["metrics"]["epochs"] == t["rung"]["epochs"]
        if t["rung"]["rung"] == 0:
            assert t["rung"]["epochs"] == 12 and t["rung"]["continues"] is None
            assert t["seconds"] == pytest.approx(cost12) and t["reward"] == pytest.approx(val12)
            continue
        promoted += 1
        assert t["rung"] == {"bracket": t["rung"]["bracket"], "rung": 1, "epochs": 200,
                             "continues": t["rung"]["continues"]}
        parent = by[t["rung"]["continues"]]
        rung0 = [u for u in ts if u["rung"]["bracket"] == t["rung"]["bracket"]
                 and u["rung"]["rung"] == 0]
        assert len(rung0) == 3 and parent["reward"] == max(u["reward"] for u in rung0)
        assert parent["arch_hash"] == t["arch_hash"]
        assert t["metrics"]["resumed_at_epoch"] == 12
        assert t["seconds"] == pytest.approx(cost_continued)  # only the 188 extra epochs
        assert t["reward"] == pytest.approx(val200)
    assert promoted >= 3
    spent = [t["seconds"] for t in ts]
    assert BUDGET <= sum(spent) <= BUDGET + spent[-1] and sum(spent[:-1]) < BUDGET
    assert "simulated time: %.0f s" % sum(spent) in r.stdout
    best = json.loads((log / "best.json").read_text())
    assert best["reward"] == max(t["reward"] for t in ts) and best["rung"]["epochs"] == 200
    assert not (log / schedulers.STATE_DIR).exists()  # the table evaluator saves no state


def test_same_seed_same_scheduled_search(sh_run, tmp_path):
    again = main_py(tmp_path / "again", "random", "successive_halving")
    assert again.returncode == 0, again.stderr[-2000:]
    assert comparable(tmp_path / "again") == comparable(sh_run[1])
    other = main_py(tmp_path / "seed1", "random", "successive_halving", seed=1)
    assert other.returncode == 0
    assert comparable(tmp_path / "seed1") != comparable(sh_run[1])


@pytest.mark.parametrize("searcher", ["random", "evolution", "tpe"])
def test_searchers_run_hyperband_on_nb201(tmp_path, searcher):
    log = tmp_path / "log"
    r = main_py(log, searcher, "hyperband", budget=9000)
    assert r.returncode == 0, r.stderr[-2000:]
    ts = trials(log)
    got = {(t["rung"]["bracket"] % 2, t["rung"]["rung"], t["rung"]["epochs"],
            t["rung"]["continues"] is not None) for t in ts}
    # bracket 0: 3 cells at 12 epochs, the best continued to 200; bracket 1: 2 cells at 200
    assert got == {(0, 0, 12, False), (0, 1, 200, True), (1, 0, 200, False)}
    for t in ts:
        if t["status"] == "ok":
            assert t["metrics"]["epochs"] == t["rung"]["epochs"]
            assert t["metrics"]["resumed_at_epoch"] == (12 if t["rung"]["continues"] is not None
                                                        else 0)
    assert sum(t["seconds"] for t in ts) >= 9000


def test_sigkill_then_resume_gives_the_uninterrupted_scheduled_records(sh_run, tmp_path):
    log = tmp_path / "log"
    args = ["--benchmark", "nb201", "--searcher", "random", "--scheduler", "successive_halving",
            "--max_time", str(int(BUDGET)), "--seed", "0", "--log_dir", str(log)]
    kill_after_records([sys.executable, "-m", "tests.slow_benchmark_main", "0.2"] + args,
                       log, 7)  # inside the second bracket
    before = trials(log)
    full = trials(sh_run[1])
    assert 7 <= len(before) < len(full)
    r = subprocess.run([sys.executable, "main.py"] + args + ["--resume"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Resuming" in r.stdout
    assert comparable(log) == comparable(sh_run[1])


def test_a_run_stopped_by_its_budget_resumes_with_a_larger_one_as_if_uninterrupted(sh_run,
                                                                                    tmp_path):
    log = tmp_path / "log"
    r = main_py(log, "random", "successive_halving", budget=5000)
    assert r.returncode == 0, r.stderr[-2000:]
    short = trials(log)
    assert short and len(short) < len(trials(sh_run[1]))
    assert json.loads((log / "pending.json").read_text())["batches"]  # left open by the budget
    r = main_py(log, "random", "successive_halving", "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Resuming" in r.stdout
    assert comparable(log) == comparable(sh_run[1])


def test_table_refuses_a_bad_200_epoch_seed_list(tmp_path):
    with gzip.open(nb201.TABLE_PATH, "rt") as f:
        lines = f.read().splitlines(keepends=True)
    fields = lines[3].split(",")
    fields[5] = "91.2;x"
    path = tmp_path / "bad.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(lines[:3] + [",".join(fields)] + lines[4:]))
    with pytest.raises(ValueError, match="row 3: val_acc_200ep_seeds is '91.2;x'") as e:
        nb201.load_table(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_bench_runs_scheduler_rows_through_the_loop_and_keeps_the_others(tmp_path):
    out = tmp_path / "nb201.json"
    kept = {"mean_test": 93.7, "std_test": 0.4, "mean_evals": 100.0, "runs": 500}
    old_row = {"searcher": "tpe", "scheduler": "hyperband", "eta": 3, "runs": 7,
               "mean_test": 93.0, "std_test": 0.1, "mean_evals": 14.0, "mean_evals_200": 6.0,
               "mean_cells": 12.0}
    out.write_text(json.dumps({"searchers": {"random": kept}, "constrained": {},
                               "schedulers": {"tpe+hyperband+eta3": old_row}}))
    r = subprocess.run([sys.executable, "benchmarks/bench_nb201.py", "--runs", "0",
                        "--latency_bounds", "", "--searchers", "random", "--schedulers",
                        "none,successive_halving", "--scheduler_runs", "2", "--workers", "1",
                        "--seed", "4", "--update", "--bench_out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(out.read_text())
    assert d["searchers"] == {"random": kept} and d["schedulers"]["tpe+hyperband+eta3"] == old_row
    none, sh = d["schedulers"]["random+none"], d["schedulers"]["random+successive_halving+eta3"]
    assert none["runs"] == sh["runs"] == 2 and none["seed"] == sh["seed"] == 4
    assert none["mean_evals_200"] == 0 and none["mean_cells"] == none["mean_evals"] > 50
    assert 0 < sh["mean_evals_200"] < sh["mean_evals"] < none["mean_evals"]
    assert sh["mean_spent_s"] >= BUDGET and none["mean_spent_s"] >= BUDGET
    # the loop's answer for seed 4 is main.py's
    log = tmp_path / "log"
    m = main_py(log, "random", "successive_halving", seed=4)
    assert m.returncode == 0, m.stderr[-2000:]
    test4 = json.loads((log / "best.json").read_text())["metrics"]["test_accuracy"] * 100
    assert abs(sh["mean_test"] - test4) == pytest.approx(sh["std_test"])  # seeds 4 and 5
    assert "| random | successive_halving (eta 3) | 2 |" in r.stdout
