"""The critic: turns a candidate's accuracy and hardware metrics into a reward.

A pure function of metrics and a ``ConstraintConfig``; nothing here trains or
measures. ``verdict`` is the one rule (status, reward, feasibility) used by
the worker's gate before training, by the search loop on every result, and
``closest`` picks the candidate reported when none is feasible. Metric names are those of ``ConstraintConfig.bounds()``: ``params``,
``flops``, ``latency_ms`` and ``memory_mb``; a bound of 0 means "no bound".

Modes:

* ``hard``: a candidate over any bound is infeasible. ``check`` runs before
  training on the cheap metrics so an infeasible candidate is never trained;
  its reward is ``constraints.infeasible_reward``. A feasible candidate's
  reward is its accuracy.
* ``soft`` (MnasNet, Tan et al. 2019): every candidate is trained and
  ``reward = accuracy * prod_k (m_k / T_k) ** w_k`` with
  ``w_k = soft_alpha`` if ``m_k <= T_k`` else ``soft_beta``.

Being exactly at a bound counts as within it.

"Best" architecture: in both modes only a candidate within all bounds can be
the best one (``is_feasible_for_best``). In hard mode infeasible candidates
are never trained, so they cannot be best; in soft mode the bounds only shape
the reward the controller learns from, and a candidate over a bound may still
earn a high reward, but the reported best is the highest-reward candidate that
satisfies every bound.
"""
import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from autodl_design.config import ConstraintConfig

MODES = ("hard", "soft")
METRICS = ("params", "flops", "latency_ms", "memory_mb")
NO_FEASIBLE_MESSAGE = "There are no possible architecture satisfying constraints!"


@dataclasses.dataclass
class Feasibility:
    """Result of checking metrics against the bounds.

    Attributes:
      feasible: True when every bounded metric is <= its bound.
      violations: metric name -> (value, bound) for each metric over its bound.
      normalised_violation: sum over bounds of max(0, value / bound - 1);
        0.0 when feasible.
      text: one short human-readable line, e.g.
        ``"params 2e+06 > 1e+06 (+100.0%)"`` or ``"within all bounds"``.
    """
    feasible: bool
    violations: Dict[str, Tuple[float, float]]
    normalised_violation: float
    text: str


def _validate_mode(constraints: ConstraintConfig) -> None:
    if constraints.mode not in MODES:
        raise ValueError("unknown constraint mode %r: use 'hard' or 'soft'" % (constraints.mode,))


def _metric(metrics: Mapping[str, Any], name: str) -> float:
    """The value of a bounded metric as a float; ValueError if missing, NaN or negative."""
    if name not in metrics or metrics[name] is None:
        raise ValueError("metric %r has a bound but was not measured (metrics: %s)"
                         % (name, sorted(metrics)))
    try:
        value = float(metrics[name])
    except (TypeError, ValueError):
        raise ValueError("metric %r must be a number, got %r" % (name, metrics[name])) from None
    if math.isnan(value):
        raise ValueError("metric %r has a bound but is NaN" % name)
    if value < 0:
        raise ValueError("metric %r must be >= 0, got %g" % (name, value))
    return value


def _fmt(x: float) -> str:
    return "%.4g" % x


def check(metrics: Mapping[str, Any], constraints: ConstraintConfig) -> Feasibility:
    """Checks metrics against every set bound.

    Args:
      metrics: metric name -> value (float); must hold every bounded metric.
        Unbounded metrics may be absent.
      constraints: the bounds and mode.

    Returns:
      A Feasibility.

    Raises:
      ValueError: a bounded metric is missing, NaN, negative or not a number,
        or the mode is unknown.
    """
    _validate_mode(constraints)
    violations: Dict[str, Tuple[float, float]] = {}
    total = 0.0
    parts = []
    for name, bound in constraints.bounds().items():
        value = _metric(metrics, name)
        if value > bound:
            violations[name] = (value, float(bound))
            excess = value / bound - 1.0
            total += excess
            parts.append("%s %s > %s (+%.1f%%)" % (name, _fmt(value), _fmt(bound), 100 * excess))
    if violations:
        text = "; ".join(parts)
    elif constraints.bounds():
        text = "within all bounds"
    else:
        text = "no bounds"
    return Feasibility(feasible=not violations, violations=violations,
                       normalised_violation=total, text=text)


def reward(accuracy: float, metrics: Mapping[str, Any], constraints: ConstraintConfig) -> float:
    """The reward the controller learns from.

    Args:
      accuracy: validation accuracy of the trained candidate (finite float).
        In hard mode an infeasible candidate is never trained; pass any
        finite placeholder (e.g. 0.0), it is not used.
      metrics: metric name -> value; must hold every bounded metric.
      constraints: the bounds, mode and soft exponents.

    Returns:
      hard: ``constraints.infeasible_reward`` if over any bound, else accuracy.
      soft: ``accuracy * prod_k (m_k / T_k) ** w_k`` (see module docstring).
      With no bounds: accuracy in both modes.

    Raises:
      ValueError: accuracy is NaN/inf or not a number, a bounded metric is
        missing or NaN, or a metric is 0 while its soft exponent is negative
        (the reward would be infinite).
    """
    try:
        acc = float(accuracy)
    except (TypeError, ValueError):
        raise ValueError("accuracy must be a number, got %r" % (accuracy,)) from None
    if not math.isfinite(acc):
        raise ValueError("accuracy must be finite, got %r; the candidate should be marked "
                         "failed instead" % (accuracy,))
    feas = check(metrics, constraints)
    if constraints.mode == "hard":
        return float(constraints.infeasible_reward) if not feas.feasible else acc
    factor = 1.0
    for name, bound in constraints.bounds().items():
        value = _metric(metrics, name)
        w = constraints.soft_alpha if value <= bound else constraints.soft_beta
        if w == 0:
            continue
        ratio = value / bound
        if ratio == 0 and w < 0:
            raise ValueError("metric %r is 0 and its soft exponent %g is negative: the reward "
                             "would be infinite; set soft_alpha >= 0" % (name, w))
        factor *= ratio ** w
    return acc * factor


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The critic's judgement of one evaluation.

    Attributes:
      status: 'ok' (trained, or worth training), 'infeasible' (over a bound
        in hard mode; never trained) or 'failed'.
      reward: what the searcher learns from; None when failed or not yet
        trained.
      feasible: within every bound (only such a candidate can be the best).
      reason: why it failed or is infeasible; for 'ok', the evaluator's
        own reason (usually "").
    """
    status: str
    reward: Optional[float]
    feasible: bool
    reason: str


def verdict(metrics: Mapping[str, Any], constraints: ConstraintConfig,
            trained: bool) -> Verdict:
    """The one rule deciding status, reward and feasibility of a candidate.

    The rule, in order:

    1. ``metrics["status"] == "failed"`` (the evaluator's report): failed,
       reward None, with the evaluator's reason.
    2. ``metrics["status"] == "infeasible"`` (the evaluator's report, e.g. the
       candidate ran out of GPU memory, or its gate found it over a bound):
       infeasible, reward ``constraints.infeasible_reward`` (the controller
       learns to avoid it), with the evaluator's reason.
    3. A bounded metric missing, NaN, negative or not a number: failed with
       reason ``"critic: <problem>"``.
    4. Hard mode and over a bound: infeasible, reward
       ``constraints.infeasible_reward``, reason the evaluator's (if any)
       else ``check(...).text``. Such a candidate is never trained.
    5. Not trained yet (``trained`` False; the worker's cheap gate): ok,
       reward None: worth training.
    6. Trained: ok with ``reward(metrics["val_accuracy"], ...)``; a NaN/inf
       accuracy or a reward that cannot be computed (a zero metric with a
       negative soft exponent) is failed, reason ``"critic: <problem>"``.

    Args:
      metrics: the evaluator's metrics (params, flops, latency_ms,
        memory_mb, val_accuracy when trained), possibly with ``status`` and
        ``reason``.
      constraints: the bounds, mode and soft exponents.
      trained: whether ``metrics`` hold a training result (val_accuracy).

    Returns:
      A Verdict.

    Raises:
      KeyError: ``trained`` but no ``val_accuracy`` (an evaluator bug).
      ValueError: the mode is unknown.
    """
    _validate_mode(constraints)
    reason = str(metrics.get("reason", ""))
    if metrics.get("status") == "failed":
        return Verdict("failed", None, False, reason)
    if metrics.get("status") == "infeasible":
        return Verdict("infeasible", float(constraints.infeasible_reward), False,
                       reason or "infeasible")
    try:
        feas = check(metrics, constraints)
    except ValueError as e:
        return Verdict("failed", None, False, "critic: %s" % e)
    if constraints.mode == "hard" and not feas.feasible:
        return Verdict("infeasible", float(constraints.infeasible_reward), False,
                       reason or feas.text)
    if not trained:
        return Verdict("ok", None, feas.feasible, reason)
    accuracy = metrics["val_accuracy"]
    try:
        value = reward(accuracy, metrics, constraints)
    except ValueError as e:
        return Verdict("failed", None, False, "critic: %s" % e)
    return Verdict("ok", value, feas.feasible, reason)


def is_feasible_for_best(metrics: Mapping[str, Any], constraints: ConstraintConfig) -> bool:
    """Whether a candidate may be reported as the best one: within all bounds, in both modes."""
    return check(metrics, constraints).feasible


def check_satisfiable(constraints: ConstraintConfig,
                      lower_bounds: Mapping[str, float]) -> Optional[str]:
    """Tells whether any architecture of the search space can meet the bounds.

    Args:
      constraints: the bounds.
      lower_bounds: metric name -> smallest value any architecture of the
        search space can have (e.g. ``{"params": 1234, "flops": 5e4}``),
        computed by the caller. Metrics without a bound are ignored.

    Returns:
      None if every bound is at or above its lower bound, else a one-line
      error naming each unreachable bound and the smallest reachable value.

    Raises:
      ValueError: a key of ``lower_bounds`` is not a known metric name.
    """
    unknown = sorted(set(lower_bounds) - set(METRICS))
    if unknown:
        raise ValueError("unknown metric names in lower_bounds: %s (known: %s)"
                         % (unknown, ", ".join(METRICS)))
    problems = []
    for name, bound in constraints.bounds().items():
        if name in lower_bounds and bound < lower_bounds[name]:
            problems.append("max_%s = %s is below %s, the smallest %s of any architecture in "
                            "this search space" % (name, _fmt(bound), _fmt(lower_bounds[name]),
                                                   name))
    if not problems:
        return None
    return "%s %s; raise the bound or shrink the network" % (NO_FEASIBLE_MESSAGE,
                                                           "; ".join(problems))


def closest(records: Sequence[Mapping[str, Any]],
            constraints: ConstraintConfig) -> Optional[Mapping[str, Any]]:
    """The measured record nearest to satisfying the bounds (for "no feasible candidate").

    Only records with status 'ok' or 'infeasible' count (their metrics were
    measured); a record whose bounded metrics are missing or NaN is skipped.
    The choice is the smallest ``check(...).normalised_violation``, then the
    smallest ``index``.

    Args:
      records: trial records (dicts with ``index``, ``status``, ``metrics``).
      constraints: the bounds.

    Returns:
      The chosen record as given, or None when no record counts.
    """
    scored = []
    for r in records:
        if r["status"] not in ("ok", "infeasible"):
            continue
        try:
            scored.append((check(r["metrics"], constraints).normalised_violation, r["index"], r))
        except ValueError:
            continue
    if not scored:
        return None
    return min(scored, key=lambda t: (t[0], t[1]))[2]
