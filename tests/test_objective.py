"""The accuracy floor and the objectives (accuracy, latency, params, flops, pareto) of the critic.

Hand-computed values for the critic's rules, one-line exit-2 errors of the
flags, and short fake-trainer searches (real worker processes) whose best
follows the objective.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from autodl_design import critic, records
from autodl_design.arch import Architecture
from autodl_design.config import ConstraintConfig
from tests import fake_trainer
from tests.test_search import ROOT, make_config, run


def c(**kw):
    return ConstraintConfig(**kw)


# --------------------------------------------------------------------------
# cost reward
# --------------------------------------------------------------------------
def test_cost_reward_by_hand():
    assert critic.cost_reward(0.0, 1.0) == 1.0
    assert critic.cost_reward(math.e - 1.0, 1.0) == pytest.approx(0.5)   # ln(e) = 1
    assert critic.cost_reward(3000.0, 3000.0) == pytest.approx(1 / (1 + math.log(2)))
    assert critic.cost_reward(1000.0, 3000.0) == pytest.approx(1 / (1 + math.log(4 / 3)))
    # strictly decreasing, and in (0, 1]
    values = [critic.cost_reward(x, 1.0) for x in (0, 1, 10, 1e3, 1e9)]
    assert all(a > b > 0 for a, b in zip(values, values[1:]))


def test_cost_objectives_minimise_their_metric_in_hard_mode():
    m = {"params": 1000.0, "flops": 5e4, "latency_ms": 2.0, "memory_mb": 1.0}
    # bound on the objective's metric: it is the reference
    assert critic.reward(0.6, m, c(objective="params", max_params=3000)) == pytest.approx(
        1 / (1 + math.log(1 + 1000 / 3000)))
    # no bound on it: 1 unit is the reference
    assert critic.reward(0.6, m, c(objective="latency")) == pytest.approx(1 / (1 + math.log(3)))
    assert critic.reward(0.6, m, c(objective="flops", max_params=3000)) == pytest.approx(
        1 / (1 + math.log(1 + 5e4)))
    # smaller cost, larger reward, whatever the accuracy
    small = dict(m, params=500.0)
    cons = c(objective="params")
    assert critic.reward(0.55, small, cons) > critic.reward(0.9, m, cons)
    # over a bound (hard): the infeasible reward, below every feasible reward
    assert critic.reward(0.9, dict(m, params=4000.0),
                         c(objective="params", max_params=3000, infeasible_reward=0.0)) == 0.0


def test_cost_objective_in_soft_mode_multiplies_the_cost_reward():
    m = {"params": 2000.0}
    cons = c(objective="params", mode="soft", max_params=1000)
    assert critic.reward(0.7, m, cons) == pytest.approx(
        1 / (1 + math.log(3)) * 2.0 ** -0.07)


def test_pareto_reward_is_the_accuracy():
    m = {"params": 2000.0, "latency_ms": 1.0}
    assert critic.reward(0.7, m, c(objective="pareto", pareto_cost="latency")) == 0.7


def test_a_missing_cost_metric_fails_the_candidate():
    v = critic.verdict({"status": "ok", "params": 10.0, "val_accuracy": 0.8},
                       c(objective="latency"), trained=True)
    assert v.status == "failed" and v.reward is None
    assert v.reason == ("critic: metric 'latency_ms' is the objective but was not measured "
                        "(metrics: ['params', 'status', 'val_accuracy'])")


# --------------------------------------------------------------------------
# accuracy floor
# --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_under_the_floor_is_infeasible_once_trained(mode):
    cons = c(mode=mode, min_accuracy=0.8, infeasible_reward=-0.5, max_params=3000)
    m = {"status": "ok", "params": 1000.0, "val_accuracy": 0.7}
    v = critic.verdict(m, cons, trained=True)
    assert v == critic.Verdict("infeasible", -0.5, False, "val_accuracy 0.7 < min_accuracy 0.8")
    assert critic.reward(0.7, m, cons) == -0.5
    # the gate before training does not know the accuracy: worth training
    assert critic.verdict({"params": 1000.0}, cons, trained=False) == critic.Verdict(
        "ok", None, True, "")
    # at the floor counts as meeting it
    v = critic.verdict(dict(m, val_accuracy=0.8), cons, trained=True)
    assert v.status == "ok" and v.feasible and v.reward == pytest.approx(
        0.8 if mode == "hard" else 0.8 * (1000 / 3000) ** 0.0)


def test_floor_reason_keeps_the_evaluators_and_bounds_come_first():
    cons = c(min_accuracy=0.5, max_params=100)
    v = critic.verdict({"status": "ok", "params": 50, "val_accuracy": 0.25,
                        "reason": "stopped early"}, cons, trained=True)
    assert v.status == "infeasible" and v.reason == (
        "val_accuracy 0.25 < min_accuracy 0.5; stopped early")
    over = critic.verdict({"status": "ok", "params": 150, "val_accuracy": 0.25}, cons, True)
    assert over.reason == "params 150 > 100 (+50.0%)"  # hard bound: never trained anyway


def test_is_feasible_for_best_applies_the_floor():
    cons = c(min_accuracy=0.6, max_params=10)
    assert critic.is_feasible_for_best({"params": 5, "val_accuracy": 0.6}, cons)
    assert not critic.is_feasible_for_best({"params": 5, "val_accuracy": 0.59}, cons)
    assert critic.is_feasible_for_best({"params": 5}, cons)  # not trained: bounds only
    assert not critic.is_feasible_for_best({"params": 11, "val_accuracy": 0.9}, cons)


def test_distance_and_closest_count_the_floor():
    cons = c(min_accuracy=0.8, max_params=1000)

    def rec(index, status, **m):
        return {"index": index, "status": status, "metrics": m}
    untrained = rec(0, "infeasible", params=1500.0)            # 0.5 + 1 (accuracy unknown)
    under = rec(1, "infeasible", params=900.0, val_accuracy=0.6)  # 0 + 0.25
    near = rec(2, "infeasible", params=1100.0, val_accuracy=0.76)  # 0.1 + 0.05
    failed = rec(3, "failed")
    assert critic.distance(untrained["metrics"], cons) == (
        pytest.approx(1.5), "params 1500 > 1000 (+50.0%); accuracy not measured (never trained)")
    assert critic.distance(under["metrics"], cons) == (
        pytest.approx(0.25), "within all bounds; val_accuracy 0.6 < min_accuracy 0.8")
    assert critic.distance(near["metrics"], cons)[0] == pytest.approx(0.15)
    assert critic.closest([untrained, under, near, failed], cons) is near
    assert critic.closest([untrained, under, failed], cons) is under
    # without a floor: the bounds only, as before
    assert critic.distance(untrained["metrics"], c(max_params=1000)) == (
        pytest.approx(0.5), "params 1500 > 1000 (+50.0%)")


def test_bad_settings_are_errors_of_the_caller():
    m = {"params": 1.0, "val_accuracy": 0.5, "status": "ok"}
    for cons, match in ((c(objective="speed"), "unknown objective 'speed'"),
                        (c(objective="pareto"), "pareto_cost ''"),
                        (c(pareto_cost="params"), "pareto_cost 'params'"),
                        (c(min_accuracy=1.5), r"min_accuracy 1.5 must be in \[0, 1\]")):
        with pytest.raises(ValueError, match=match):
            critic.verdict(m, cons, trained=True)
    with pytest.raises(ValueError, match="minimises no cost"):
        critic.cost_metric(c())


# --------------------------------------------------------------------------
# best: ties, and the Pareto front
# --------------------------------------------------------------------------
def _record(index, acc, params, status="ok", feasible=True, reward=None, arch_hash=None):
    return {"index": index, "status": status, "feasible": feasible,
            "reward": acc if reward is None else reward, "arch_hash": arch_hash or "h%d" % index,
            "metrics": {"val_accuracy": acc, "params": params, "latency_ms": params / 1000}}


def test_equal_rewards_go_to_the_more_accurate_then_the_earlier():
    a = _record(0, 0.7, 1000, reward=0.5)
    b = _record(1, 0.8, 1000, reward=0.5)
    c_ = _record(2, 0.8, 1000, reward=0.5)
    assert records.RunState([a, b, c_]).best is b
    assert records.RunState([c_, b, a]).best is b   # order of records does not matter


def test_objective_vector_and_dominates():
    cons = c(objective="pareto", pareto_cost="latency")
    assert critic.objective_vector(_record(0, 0.75, 2500), cons) == (0.75, 2.5)
    assert critic.objective_vector({"metrics": {"val_accuracy": 0.5, "params": 7}},
                                   c(objective="params")) == (0.5, 7.0)
    with pytest.raises(ValueError, match="must be a number"):
        critic.objective_vector({"metrics": {"val_accuracy": None, "latency_ms": 1.0}}, cons)
    assert critic.PARETO_DIRECTIONS == ("maximize", "minimize")
    assert critic.dominates((0.8, 1.0), (0.7, 1.0)) and critic.dominates((0.7, 0.5), (0.7, 1.0))
    assert not critic.dominates((0.7, 1.0), (0.7, 1.0))       # equal: neither
    assert not critic.dominates((0.9, 2.0), (0.7, 1.0))       # a trade-off: neither


def test_pareto_front_by_hand():
    cons = c(objective="pareto", pareto_cost="params")
    rs = [_record(0, 0.80, 3000),        # dominated by #3 (same accuracy, cheaper)
          _record(1, 0.70, 1000),        # front
          _record(2, 0.75, 3000),        # dominated by #0 and #3
          _record(3, 0.80, 2000),        # front
          _record(4, 0.90, 5000),        # front
          _record(5, 0.95, 500, status="infeasible", feasible=False),  # not counted
          _record(6, 0.99, 100, feasible=False),                      # not counted
          _record(7, 0.70, 1000),        # equal to #1, another architecture: kept
          _record(8, 0.99, 10, status="duplicate", arch_hash="h1"),   # not counted
          _record(9, 0.60, 900, arch_hash="h3")]  # a second record of #3's architecture
    front = critic.pareto_front(list(reversed(rs)), cons)
    assert [r["index"] for r in front] == [1, 7, 3, 4]
    assert critic.pareto_front([], cons) == []
    # the sweep agrees with the definition (no other counted vector dominates) on many points
    rng = np.random.default_rng(0)
    many = [_record(i, float(rng.integers(0, 20)) / 20, float(rng.integers(1, 30)) * 100)
            for i in range(300)]
    vectors = [critic.objective_vector(r, cons) for r in many]
    expected = [i for i, v in enumerate(vectors)
                if not any(critic.dominates(u, v) for u in vectors)]
    assert sorted(r["index"] for r in critic.pareto_front(many, cons)) == expected


def test_hypervolume_by_hand():
    # rectangles [1, 4] x [0, 0.6] and [2, 4] x [0, 0.8]: 1.8 + 1.6 - 1.2
    assert critic.hypervolume([(0.8, 2.0), (0.6, 1.0)], (0.0, 4.0)) == pytest.approx(2.2)
    # a dominated vector and vectors outside the reference add nothing
    assert critic.hypervolume([(0.6, 1.0), (0.8, 2.0), (0.5, 3.0), (0.9, 5.0), (-0.1, 0.5)],
                              (0.0, 4.0)) == pytest.approx(2.2)
    assert critic.hypervolume([(0.8, 2.0)], (0.5, 3.0)) == pytest.approx(0.3)
    assert critic.hypervolume([], (0.0, 1.0)) == 0.0


def test_describe_objective():
    assert critic.describe_objective(c()) == (
        "maximise validation accuracy; accuracy floor: none")
    assert critic.describe_objective(c(objective="params", min_accuracy=0.8)) == (
        "minimise params within the bounds; accuracy floor: val_accuracy >= 0.8")
    assert critic.describe_objective(c(objective="pareto", pareto_cost="latency")) == (
        "Pareto front of validation accuracy (max) and latency_ms (min); accuracy floor: none")


# --------------------------------------------------------------------------
# flags: one line, exit 2, nothing written
# --------------------------------------------------------------------------
@pytest.mark.parametrize("argv, line", [
    (["--min_accuracy=1.5"], "error: flag --min_accuracy=1.5: 1.5 is not a number in the range "
                             "[0, 1]"),
    (["--min_accuracy=-0.1"], "error: flag --min_accuracy=-0.1: -0.1 is not a number in the "
                              "range [0, 1]"),
    (["--objective=speed"], "error: flag --objective=speed: value should be one of "
                            "<accuracy|latency|params|flops|pareto>"),
    (["--objective=pareto"], "error: --objective pareto needs the cost traded against "
                             "accuracy: add --pareto_cost latency, params or flops"),
    (["--pareto_cost=params"], "error: --pareto_cost applies only with --objective pareto: "
                               "add --objective pareto or remove --pareto_cost"),
    (["--objective=params", "--pareto_cost=latency"], "error: --pareto_cost applies only with "
     "--objective pareto: add --objective pareto or remove --pareto_cost"),
    (["--searcher=nsga2"], "error: --searcher nsga2 searches the Pareto front of accuracy and a "
                           "cost: add --objective pareto --pareto_cost latency, params or flops"),
    (["--benchmark=nb201", "--objective=flops"], "error: --benchmark nb201: the table has no "
     "FLOPs, the metric of the objective; use latency or params"),
    (["--benchmark=nb201", "--objective=pareto", "--pareto_cost=flops"], "error: --benchmark "
     "nb201: the table has no FLOPs, the metric of the objective; use latency or params"),
    (["--method=enas", "--min_accuracy=0.5"], "error: --method enas ranks candidates by their "
     "accuracy with shared weights: --objective and --min_accuracy apply only to --method "
     "multi_trial"),
])
def test_bad_objective_flags_are_one_line_exit_2(tmp_path, argv, line):
    log_dir = tmp_path / "log"
    r = subprocess.run([sys.executable, "main.py", "--log_dir=%s" % log_dir] + argv, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [line]
    assert not log_dir.exists() and r.stdout == ""


def test_objective_flags_reach_the_config():
    from tests.test_flags import parse
    import flags
    try:
        config = flags.build_config(parse(["--objective=pareto", "--pareto_cost=latency",
                                           "--min_accuracy=0.75", "--searcher=nsga2"]),
                                    num_gpus=0)
    finally:
        flags.FLAGS.unparse_flags()
    assert (config.constraints.objective, config.constraints.pareto_cost,
            config.constraints.min_accuracy) == ("pareto", "latency", 0.75)


# --------------------------------------------------------------------------
# searches with the fake trainer
# --------------------------------------------------------------------------
def test_objective_params_with_a_floor_picks_the_smallest_candidate_above_it(tmp_path):
    config = make_config(tmp_path / "log", num_models=16, num_nodes=2, objective="params",
                         min_accuracy=0.7)
    code, trials, out = run(config)
    assert code == 0
    trained = [t for t in trials if t["status"] in ("ok", "infeasible")]
    for t in trained:  # fake accuracy and params are known; the floor decides the status
        acc = fake_trainer.accuracy(Architecture.from_dict(t["arch"]))
        assert t["status"] == ("ok" if acc >= 0.7 else "infeasible"), t
        if t["status"] == "infeasible":
            assert "< min_accuracy 0.7" in t["reason"] and t["reward"] == 0.0
        else:
            assert t["reward"] == pytest.approx(critic.cost_reward(t["metrics"]["params"], 1.0))
    above = [t for t in trained if t["status"] == "ok"]
    smallest = min(above, key=lambda t: (t["metrics"]["params"],
                                         -t["metrics"]["val_accuracy"], t["index"]))
    assert len({t["metrics"]["params"] for t in above}) > 1  # a choice was made
    assert any(t["status"] == "infeasible" for t in trained)
    best = json.loads((tmp_path / "log" / "best.json").read_text())
    assert best["index"] == smallest["index"]
    # the most accurate candidate above the floor is not the answer
    assert max(t["metrics"]["val_accuracy"] for t in above) > best["metrics"]["val_accuracy"]
    assert ("objective: minimise params within the bounds; accuracy floor: val_accuracy >= 0.7"
            in out)
    assert "best architecture: #%d" % best["index"] in out


def test_a_floor_nothing_reaches_reports_the_closest(tmp_path):
    # the fake accuracy is at most 0.9
    config = make_config(tmp_path / "log", num_models=4, num_nodes=2, min_accuracy=0.95)
    code, trials, out = run(config)
    assert code == 0
    assert all(t["status"] in ("infeasible", "duplicate") for t in trials)
    assert critic.NO_FEASIBLE_MESSAGE in out
    closest = min((t for t in trials if t["status"] == "infeasible"),
                  key=lambda t: (-t["metrics"]["val_accuracy"], t["index"]))
    assert "closest candidate: #%d (no bounds; val_accuracy %.4g < min_accuracy 0.95)" % (
        closest["index"], closest["metrics"]["val_accuracy"]) in out
    assert "closest architecture: #%d" % closest["index"] in out
    assert "best architecture" not in out and "best.json" not in out
    assert not (tmp_path / "log" / "best.json").exists()


def test_the_report_names_the_objective_and_lists_the_pareto_front(tmp_path):
    from autodl_design.search import report
    config = make_config(tmp_path / "log", num_models=8, num_nodes=2, objective="pareto",
                         pareto_cost="params")
    assert run(config)[0] == 0
    text = open(report.write_report(str(tmp_path / "log"))).read()
    assert ("| objective | Pareto front of validation accuracy (max) and params (min); "
            "accuracy floor: none |") in text
    trials = records.read_trials(os.path.join(str(tmp_path / "log"), records.TRIALS_FILE))
    front = critic.pareto_front(trials, config.constraints)
    assert front
    section = text.split("## Pareto front: validation accuracy against params")[1]
    rows = [l for l in section.splitlines() if l.startswith("| ") and l[2].isdigit()]
    assert [int(l.split("|")[1]) for l in rows] == [t["index"] for t in front]


def test_pareto_order_by_hand():
    """Ranks: a (0.9, 5), b (0.8, 2), c (0.7, 1) are the front; d (0.8, 4) is dominated by
    b (as accurate, cheaper) and e (0.6, 3) by b and c: rank 1. Crowding on the front: a and
    c are its ends (inf), b is inner (1 + 1 = 2); in rank 1 both d and e are ends."""
    vectors = [(0.8, 4.0), (0.9, 5.0), (0.6, 3.0), (0.8, 2.0), (0.7, 1.0)]  # d a e b c
    order = critic.pareto_order(vectors)
    assert order[:3] == [1, 4, 3]  # ends a, c (inf, by position), then b
    assert set(order[3:]) == {0, 2} and order[3:] == [0, 2]  # both ends: by position
    # Crowding inside one rank by hand: four points on a line, ranges 3 (acc) and 3 (cost):
    # inner ones (0.2, 1) and (0.3, 2) crowd (0.3-0.1)/0.3 + (2-0)/3 = 1.333 and
    # (0.4-0.2)/0.3 + (3-1)/3 = 1.333: tie -> position.
    line = [(0.1, 0.0), (0.3, 2.0), (0.2, 1.0), (0.4, 3.0)]
    assert critic.pareto_order(line) == [0, 3, 1, 2]
    uneven = [(0.1, 0.0), (0.15, 0.5), (0.3, 2.0), (0.4, 3.0)]
    # (0.15,0.5): (0.3-0.1)/0.3 + (2-0)/3 = 1.333; (0.3,2): (0.4-0.15)/0.3 + (3-0.5)/3 = 1.667
    assert critic.pareto_order(uneven) == [0, 3, 2, 1]
    assert critic.pareto_order([]) == []


def test_hyperband_with_pareto_promotes_by_rank_then_crowding():
    """``schedulers.promoted`` under --objective pareto: the front before the dominated,
    its ends before its middle; under accuracy by reward."""
    from autodl_design.search.schedulers import promoted
    cons = c(objective="pareto", pareto_cost="params")

    def rec(i, acc, params):
        return {"index": i, "status": "ok", "reward": acc, "feasible": True,
                "metrics": {"val_accuracy": acc, "params": params}}
    rs = [rec(0, 0.8, 4.0), rec(1, 0.9, 5.0), rec(2, 0.6, 3.0), rec(3, 0.8, 2.0),
          rec(4, 0.7, 1.0), dict(rec(5, 0.95, 1.0), status="failed", reward=None)]
    assert [r["index"] for r in promoted(rs, 2, cons)] == [1, 4]
    assert [r["index"] for r in promoted(rs, 4, cons)] == [1, 4, 3, 0]
    assert [r["index"] for r in promoted(rs, 2, c())] == [1, 0]
