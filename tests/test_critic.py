"""Tests of the critic against hand-computed rewards in hard and soft mode."""
import math

import pytest

from autodl_design import critic
from autodl_design.config import ConstraintConfig


def soft(**kw):
    return ConstraintConfig(mode="soft", **kw)


def hard(**kw):
    return ConstraintConfig(mode="hard", **kw)


# ----- soft (MnasNet) -----

def test_soft_over_bound_uses_beta():
    r = critic.reward(0.8, {"params": 2e6}, soft(max_params=1e6))
    assert r == pytest.approx(0.8 * 2 ** -0.07)
    assert r == pytest.approx(0.762110, abs=1e-6)  # 2**-0.07 = 0.952638


def test_soft_within_bound_alpha_zero_is_accuracy():
    assert critic.reward(0.8, {"params": 5e5}, soft(max_params=1e6)) == 0.8


def test_soft_within_bound_nonzero_alpha():
    r = critic.reward(0.8, {"params": 5e5}, soft(max_params=1e6, soft_alpha=-0.07))
    assert r == pytest.approx(0.8 * 0.5 ** -0.07)  # = 0.839773...
    assert r == pytest.approx(0.839773, abs=1e-6)


def test_soft_two_metrics_multiply():
    c = soft(max_params=1e6, max_latency_ms=10.0)
    r = critic.reward(0.9, {"params": 2e6, "latency_ms": 40.0}, c)
    assert r == pytest.approx(0.9 * 2 ** -0.07 * 4 ** -0.07)
    # one over, one under (alpha 0 -> factor 1)
    r2 = critic.reward(0.9, {"params": 2e6, "latency_ms": 5.0}, c)
    assert r2 == pytest.approx(0.9 * 2 ** -0.07)


def test_soft_custom_beta():
    r = critic.reward(0.5, {"flops": 3e8}, soft(max_flops=1e8, soft_beta=-0.5))
    assert r == pytest.approx(0.5 / math.sqrt(3))


def test_soft_exactly_at_bound_is_within():
    c = soft(max_params=1e6, soft_alpha=0.0, soft_beta=-1.0)
    assert critic.reward(0.7, {"params": 1e6}, c) == 0.7
    assert critic.check({"params": 1e6}, c).feasible


def test_soft_zero_metric_with_negative_exponent_is_an_error():
    with pytest.raises(ValueError, match="latency_ms"):
        critic.reward(0.7, {"latency_ms": 0.0}, soft(max_latency_ms=5, soft_alpha=-0.07))


# ----- hard -----

def test_hard_over_bound_gets_infeasible_reward():
    c = hard(max_params=1e6)
    assert critic.reward(0.8, {"params": 2e6}, c) == 0.0
    assert critic.reward(0.8, {"params": 2e6}, hard(max_params=1e6, infeasible_reward=-1)) == -1.0


def test_hard_within_and_at_bound_is_accuracy():
    c = hard(max_params=1e6, max_flops=1e8, infeasible_reward=-1)
    assert critic.reward(0.8, {"params": 1e6, "flops": 1e8}, c) == 0.8
    assert critic.reward(0.8, {"params": 1e6 + 1, "flops": 1e8}, c) == -1.0


def test_no_bounds_reward_is_accuracy_in_both_modes():
    for c in (hard(), soft()):
        assert critic.reward(0.61, {}, c) == 0.61
        assert critic.reward(0.61, {"params": 1e9}, c) == 0.61
        f = critic.check({}, c)
        assert f.feasible and f.violations == {} and f.normalised_violation == 0.0
        assert f.text == "no bounds"


# ----- check -----

def test_check_violations_and_normalised_sum():
    c = hard(max_params=1e6, max_flops=1e8, max_latency_ms=10, max_memory_mb=100)
    f = critic.check({"params": 2e6, "flops": 5e7, "latency_ms": 15.0, "memory_mb": 100}, c)
    assert not f.feasible
    assert f.violations == {"params": (2e6, 1e6), "latency_ms": (15.0, 10.0)}
    assert f.normalised_violation == pytest.approx(1.0 + 0.5)
    assert "params" in f.text and "latency_ms" in f.text and "flops" not in f.text
    ok = critic.check({"params": 1e6, "flops": 1e8, "latency_ms": 1, "memory_mb": 1}, c)
    assert ok.feasible and ok.normalised_violation == 0.0 and ok.text == "within all bounds"


def test_missing_or_nan_bounded_metric_is_named():
    c = hard(max_params=1e6, max_latency_ms=5)
    with pytest.raises(ValueError, match="latency_ms"):
        critic.check({"params": 1.0}, c)
    with pytest.raises(ValueError, match="latency_ms"):
        critic.reward(0.5, {"params": 1.0, "latency_ms": float("nan")}, soft(max_latency_ms=5))
    # unbounded metrics may be missing or NaN
    assert critic.check({"params": 1.0, "latency_ms": 1.0, "flops": float("nan")}, c).feasible


def test_nan_accuracy_and_bad_mode_raise():
    with pytest.raises(ValueError, match="accuracy"):
        critic.reward(float("nan"), {}, soft())
    with pytest.raises(ValueError, match="mode"):
        critic.check({}, ConstraintConfig(mode="medium"))


def test_is_feasible_for_best_both_modes():
    for c in (hard(max_params=1e6), soft(max_params=1e6)):
        assert critic.is_feasible_for_best({"params": 1e6}, c)
        assert not critic.is_feasible_for_best({"params": 1.5e6}, c)


# ----- satisfiable / closest -----

def test_check_satisfiable():
    c = hard(max_params=1000, max_flops=1e6)
    msg = critic.check_satisfiable(c, {"params": 5000, "flops": 1e5})
    assert msg is not None and "max_params" in msg and "5000" in msg
    assert "max_flops" not in msg and "\n" not in msg
    assert critic.check_satisfiable(c, {"params": 1000, "flops": 1e6}) is None
    assert critic.check_satisfiable(hard(), {"params": 5000}) is None
    with pytest.raises(ValueError, match="parms"):
        critic.check_satisfiable(c, {"parms": 1})


def test_closest():
    c = hard(max_params=1e6, max_flops=1e8)

    def rec(index, status, **metrics):
        return {"index": index, "status": status, "metrics": metrics}
    recs = [rec(0, "infeasible", params=3e6, flops=1e8),        # violation 2.0
            rec(3, "infeasible", params=1.5e6, flops=1e8),      # 0.5, larger index
            rec(1, "ok", params=1.2e6, flops=1.3e8),            # 0.2 + 0.3 = 0.5
            rec(2, "failed", params=1e6, flops=1e8),            # failed: never closest
            rec(4, "infeasible", params=float("nan"), flops=1)]  # unmeasurable: skipped
    assert critic.closest(recs, c) is recs[2]
    assert critic.closest(recs[:2], c) is recs[1]
    assert critic.closest(recs[3:], c) is None
    assert critic.closest([], c) is None


# ----- verdict: the one rule -----

def test_verdict_hard_mode_by_hand():
    c = hard(max_params=1000, infeasible_reward=-0.5)
    over = {"params": 1500.0}
    assert critic.verdict(over, c, trained=False) == critic.Verdict(
        "infeasible", -0.5, False, "params 1500 > 1000 (+50.0%)")
    # the worker's reason is kept
    assert critic.verdict(dict(over, status="infeasible", reason="why"), c, True).reason == "why"
    # within: worth training, then rewarded with the accuracy
    assert critic.verdict({"params": 1000}, c, trained=False) == critic.Verdict(
        "ok", None, True, "")
    assert critic.verdict({"params": 1000, "val_accuracy": 0.75, "status": "ok"}, c,
                          trained=True) == critic.Verdict("ok", 0.75, True, "")


def test_verdict_soft_mode_by_hand():
    c = soft(max_params=1000)
    v = critic.verdict({"params": 2000, "val_accuracy": 0.8, "status": "ok"}, c, trained=True)
    assert v.status == "ok" and not v.feasible and v.reason == ""
    assert v.reward == pytest.approx(0.8 * 2 ** -0.07)  # 0.762110...
    assert v.reward == pytest.approx(0.762110, abs=1e-6)
    # over the bound but trained in soft mode: not infeasible before training either
    assert critic.verdict({"params": 2000}, c, trained=False) == critic.Verdict(
        "ok", None, False, "")


def test_verdict_failures():
    c = hard(max_latency_ms=5)
    failed = {"status": "failed", "reason": "loss is nan at epoch 1", "latency_ms": 1.0}
    assert critic.verdict(failed, c, trained=False) == critic.Verdict(
        "failed", None, False, "loss is nan at epoch 1")
    v = critic.verdict({"latency_ms": float("nan")}, c, trained=False)
    assert v.status == "failed" and v.reward is None and v.reason.startswith("critic: ")
    assert "latency_ms" in v.reason
    v = critic.verdict({"latency_ms": 1.0, "val_accuracy": float("inf"), "status": "ok"}, c,
                       trained=True)
    assert v.status == "failed" and "accuracy" in v.reason and not v.feasible
    with pytest.raises(KeyError):  # trained without an accuracy: the evaluator's bug
        critic.verdict({"latency_ms": 1.0, "status": "ok"}, c, trained=True)
    with pytest.raises(ValueError, match="mode"):
        critic.verdict({}, ConstraintConfig(mode="medium"), trained=False)


def test_an_infeasible_report_gets_the_infeasible_reward_in_both_modes():
    # e.g. out of GPU memory: no latency or memory was measured, nothing trained
    for mode in ("hard", "soft"):
        c = ConstraintConfig(max_latency_ms=5, mode=mode, infeasible_reward=-0.5)
        v = critic.verdict({"status": "infeasible", "reason": "out of memory on gpu:1",
                            "params": 10}, c, trained=False)
        assert v == critic.Verdict("infeasible", -0.5, False, "out of memory on gpu:1")
