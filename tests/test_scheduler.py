"""Successive halving and Hyperband over the fake trainer: rungs, promotions, continuation,
determinism, SIGKILL + resume, and the bad flags."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from autodl_design.search import schedulers
from tests.kill import kill_after_records
from tests.test_golden import stable
from tests.test_search import ROOT, make_config, run


def sched_config(log_dir, scheduler="successive_halving", searcher="random", num_models=26,
                 max_epochs=9, min_epochs=1, eta=3, devices=("cpu", "cpu"), resume=False,
                 **search):
    c = make_config(log_dir, searcher=searcher, num_models=num_models, num_nodes=3,
                    devices=devices, resume=resume)
    return dataclasses.replace(
        c, trainer=dataclasses.replace(c.trainer, early_stop=max_epochs),
        search=dataclasses.replace(c.search, scheduler=scheduler, min_epochs=min_epochs,
                                   eta=eta, **search))


def test_rung_epochs_and_bracket_plans():
    assert schedulers.rung_epochs(1, 8, 3) == [1, 3, 8]
    assert schedulers.rung_epochs(1, 9, 3) == [1, 3, 9]
    assert schedulers.rung_epochs(8, 8, 3) == [8]
    assert schedulers.rung_epochs(2, 16, 2) == [2, 4, 8, 16]
    epochs = [1, 3, 9]
    sh = [schedulers.bracket_plan("successive_halving", b, epochs, 3) for b in range(3)]
    assert sh == [[(9, 1), (3, 3), (1, 9)]] * 3
    hb = [schedulers.bracket_plan("hyperband", b, epochs, 3) for b in range(4)]
    # Li et al.'s brackets for R = 9, eta = 3: s = 2, 1, 0, then again.
    assert hb == [[(9, 1), (3, 3), (1, 9)], [(5, 3), (1, 9)], [(3, 9)], [(9, 1), (3, 3), (1, 9)]]


def rungs_of(trials):
    return {t["index"]: t for t in trials}


def test_cycle_cost_counts_each_brackets_candidates_and_only_the_extra_epochs():
    # by hand, rungs 1/3/8, eta 3: hyperband brackets 9@1 -> 3@3 -> 1@8 (9 + 3*2 + 1*5 = 20
    # epochs), 5@3 -> 1@8 (15 + 5 = 20), 3@8 (24): 17 candidates, 64 epochs
    assert schedulers.cycle_cost("hyperband", [1, 3, 8], 3) == (17, 64)
    assert schedulers.cycle_cost("successive_halving", [1, 3, 8], 3) == (9, 20)
    # rungs 1/3/9/27: 27@1 .. 1@27 (27+18+18+18), 12@3 -> 4@9 -> 1@27 (36+24+18),
    # 6@9 -> 2@27 (54+36), 4@27 (108): 49 candidates, 357 epochs
    assert schedulers.cycle_cost("hyperband", [1, 3, 9, 27], 3) == (49, 357)


def test_successive_halving_promotes_the_best_third_and_continues_their_training(tmp_path):
    code, trials, out = run(sched_config(tmp_path / "log"))
    assert code == 0
    by = rungs_of(trials)
    assert sorted(by) == list(range(26))
    assert all(t["rung"]["bracket"] in (0, 1) for t in trials)
    first = [t for t in trials if t["rung"]["bracket"] == 0]
    for k, (n, epochs) in enumerate([(9, 1), (3, 3), (1, 9)]):
        rung = [t for t in first if t["rung"]["rung"] == k]
        assert len(rung) == n and {t["rung"]["epochs"] for t in rung} == {epochs}
        for t in rung:
            assert t["metrics"]["epochs"] == epochs == len(t["metrics"]["val_history"])
            if k == 0:
                assert t["rung"]["continues"] is None and t["metrics"]["resumed_at_epoch"] == 0
                continue
            parent = by[t["rung"]["continues"]]
            assert parent["rung"]["rung"] == k - 1 and parent["arch_hash"] == t["arch_hash"]
            # continued from the parent's saved state: its epochs are not trained again
            assert t["metrics"]["resumed_at_epoch"] == parent["metrics"]["epochs"]
            assert t["metrics"]["val_history"][:len(parent["metrics"]["val_history"])] == \
                parent["metrics"]["val_history"]
        if k:
            below = [t for t in first if t["rung"]["rung"] == k - 1]
            chosen = {t["rung"]["continues"] for t in rung}
            ranked = sorted(below, key=lambda t: (-t["reward"], t["index"]))
            assert chosen == {t["index"] for t in ranked[:n]}
    # the searcher learned from its own batches only: the first rung of each bracket
    with open(tmp_path / "log" / "checkpoint" / "random_searcher.json") as f:
        assert json.load(f)["step"] == 2
    assert [t["step"] for t in first] == [0] * 13
    best = json.loads((tmp_path / "log" / "best.json").read_text())
    assert best["rung"]["epochs"] == 9
    # states of losers and of continued rungs are removed, none of the top rung is
    # written: after two whole brackets, none is left
    assert os.listdir(tmp_path / "log" / "rungs") == []


@pytest.mark.parametrize("searcher", ["random", "evolution", "rl", "tpe"])
def test_hyperband_is_the_same_search_on_one_or_two_workers(tmp_path, searcher):
    got = []
    for k, devices in enumerate((("cpu",), ("cpu", "cpu"))):
        config = sched_config(tmp_path / str(k), "hyperband", searcher=searcher,
                              num_models=30, devices=devices)
        code, trials, _ = run(config)
        assert code == 0
        got.append([{k: v for k, v in t.items() if k != "metrics"} for t in stable(trials)])
    assert got[0] == got[1]
    brackets = {(t["rung"]["bracket"], t["rung"]["rung"], t["rung"]["epochs"]) for t in got[0]}
    assert {(0, 0, 1), (0, 1, 3), (0, 2, 9), (1, 0, 3), (1, 1, 9), (2, 0, 9)} <= brackets


def test_median_early_termination_stays_with_hyperband(tmp_path):
    config = sched_config(tmp_path / "log", "hyperband", num_models=30, lookahead=0,
                          early_termination="median", cull_start_epoch=2)
    code, trials, _ = run(config)
    assert code == 0
    stopped = [t for t in trials if t["metrics"].get("stopped_early")]
    assert stopped and all("below the median" in t["reason"] for t in stopped)
    assert all(t["metrics"]["epochs"] < t["rung"]["epochs"] for t in stopped)


def test_sigkill_then_resume_keeps_rungs_and_weights(tmp_path):
    ref_code, ref, _ = run(sched_config(tmp_path / "ref", "hyperband", num_models=30,
                                        devices=("cpu",)))
    assert ref_code == 0
    config = sched_config(tmp_path / "killed", "hyperband", num_models=30, devices=("cpu",))
    cmd = [sys.executable, "-m", "tests.fake_search_main", json.dumps(config.to_dict()),
           json.dumps({"delay": 0.3})]
    kill_after_records(cmd, tmp_path / "killed", 11)  # inside bracket 0's second rung
    from autodl_design import records
    partial = records.read_trials(str(tmp_path / "killed" / "trials.jsonl"))
    assert 11 <= len(partial) < 30
    assert os.listdir(tmp_path / "killed" / "rungs")  # saved states survive the kill
    resumed = dataclasses.replace(config, search=dataclasses.replace(config.search,
                                                                     resume=True))
    code, trials, out = run(resumed)
    assert code == 0 and "Resuming" in out
    assert stable(trials) == stable(ref)  # rungs, promotions and continued curves alike


@pytest.mark.parametrize("args, words", [
    (["--scheduler", "hyperband", "--eta", "1"], "--eta=1"),
    (["--scheduler", "hyperband", "--min_epochs", "9", "--max_epochs", "8"],
     "--min_epochs 9 exceeds --max_epochs"),
    (["--scheduler", "successive_halving", "--method", "darts"], "--scheduler applies to"),
    (["--scheduler", "hyperband", "--benchmark", "nb201", "--min_epochs", "3"],
     "the table holds figures after 12 and 200 epochs"),
])
def test_bad_scheduler_flags_one_line_exit_2(tmp_path, args, words):
    r = subprocess.run([sys.executable, "main.py", "--preset", "cpu", "--log_dir",
                        str(tmp_path / "log")] + args, cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and words in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "log")


def test_a_twin_reuses_only_a_result_of_the_same_epochs(tmp_path):
    # 2 nodes x 3 ops: few architectures, so evolution proposes many twins
    config = sched_config(tmp_path / "log", "hyperband", searcher="evolution", num_models=40)
    config = dataclasses.replace(config, agent=dataclasses.replace(config.agent, num_nodes=2))
    code, trials, _ = run(config)
    assert code == 0
    by = rungs_of(trials)
    twins = [t for t in trials if t["status"] == "duplicate"]
    assert twins
    for t in twins:
        source = by[int(t["reason"].split("#")[1].split(" ")[0])]
        assert source["rung"]["epochs"] == t["rung"]["epochs"]
        assert t["metrics"] == source["metrics"]
    seen = {}
    for t in sorted(trials, key=lambda t: t["index"]):
        if t["rung"]["rung"] == 0 and t["status"] == "ok":  # evaluated again: other epochs
            for prior in seen.get(t["arch_hash"], []):
                assert prior["rung"]["epochs"] != t["rung"]["epochs"] or prior["status"] != "ok" \
                    or prior["rung"]["rung"] > 0
        seen.setdefault(t["arch_hash"], []).append(t)


def test_successive_halving_with_a_pareto_objective_promotes_the_front(tmp_path):
    """--objective pareto --pareto_cost params: a rung's promoted candidates are the first of
    ``critic.pareto_order`` over (accuracy, params), not the most accurate."""
    from autodl_design import critic
    config = sched_config(tmp_path / "log")
    config = dataclasses.replace(config, constraints=dataclasses.replace(
        config.constraints, objective="pareto", pareto_cost="params"))
    code, trials, _ = run(config)
    assert code == 0
    first = [t for t in trials if t["rung"]["bracket"] == 0]
    differs = False
    for k, n in ((1, 3), (2, 1)):
        below = sorted((t for t in first if t["rung"]["rung"] == k - 1 and t["status"] == "ok"),
                       key=lambda t: t["index"])
        chosen = {t["rung"]["continues"] for t in first if t["rung"]["rung"] == k}
        order = critic.pareto_order([critic.objective_vector(t, config.constraints)
                                     for t in below])
        assert chosen == {below[i]["index"] for i in order[:n]}
        by_reward = sorted(below, key=lambda t: (-t["reward"], t["index"]))[:n]
        differs |= chosen != {t["index"] for t in by_reward}
    assert differs  # the fake trainer's params and accuracy disagree somewhere
