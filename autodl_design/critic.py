"""The critic: turns a candidate's accuracy and hardware metrics into a reward.

A pure function of metrics and a ``ConstraintConfig``; nothing here trains or
measures. ``verdict`` is the one rule (status, reward, feasibility) used by
the worker's gate before training, by the search loop on every result, and
``closest`` picks the candidate reported when none is feasible. Metric names
are those of ``ConstraintConfig.bounds()``: ``params``, ``flops``,
``latency_ms`` and ``memory_mb``; a bound of 0 means "no bound".

Modes:

* ``hard``: a candidate over any bound is infeasible. ``check`` runs before
  training on the cheap metrics so an infeasible candidate is never trained;
  its reward is ``constraints.infeasible_reward``. A feasible candidate's
  reward is its accuracy.
* ``soft`` (MnasNet, Tan et al. 2019): every candidate is trained and
  ``reward = accuracy * prod_k (m_k / T_k) ** w_k`` with
  ``w_k = soft_alpha`` if ``m_k <= T_k`` else ``soft_beta``.

Being exactly at a bound counts as within it.

Accuracy floor (``min_accuracy``, 0 = none): a trained candidate whose
``val_accuracy`` is below it is infeasible in both modes (status
'infeasible', reward ``infeasible_reward``, reason naming the floor). The
floor needs training, so the gate before training only applies the bounds.

Objective (``objective``):

* ``accuracy`` (default): the reward above, from the accuracy.
* ``latency``, ``params``, ``flops``: minimise that cost (``latency_ms``,
  ``params``, ``flops``) among candidates within every bound and the floor.
  The reward stays larger-is-better, so every searcher works unchanged: in
  place of the accuracy it is ``cost_reward(c, ref) = 1 / (1 + ln(1 + c /
  ref))`` with ``ref`` the bound on that cost when one is set, else 1 unit (1
  parameter, 1 multiply-add, 1 ms). It lies in (0, 1], is 1 at cost 0 and
  about 0.59 at the bound, and decreases strictly with the cost, through its
  logarithm: far above ``ref`` it still tells costs apart (where ``ref / (ref
  + c)`` would flatten to 0). A feasible candidate's reward is thus above the
  default infeasible reward (0).
  Soft mode multiplies it by the same factor as the accuracy.
* ``pareto``: validation accuracy (max) against one cost (``pareto_cost``,
  min). Searchers that need one number learn from the accuracy reward; the
  answer is the non-dominated front of the feasible trained candidates
  (``objective_vector``, ``pareto_front``; ``hypervolume`` measures a
  front); the single "best" is the most accurate one.

Among candidates with equal rewards the records pick the more accurate, then
the earlier one (``records.RunState``).

"Best" architecture: in both modes only a candidate within all bounds can be
the best one (``is_feasible_for_best``). In hard mode infeasible candidates
are never trained, so they cannot be best; in soft mode the bounds only shape
the reward the controller learns from, and a candidate over a bound may still
earn a high reward, but the reported best is the highest-reward candidate that
satisfies every bound (and the floor).
"""
import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from autodl_design.config import ConstraintConfig

MODES = ("hard", "soft")
METRICS = ("params", "flops", "latency_ms", "memory_mb")
NO_FEASIBLE_MESSAGE = "There are no possible architecture satisfying constraints!"
OBJECTIVES = ("accuracy", "latency", "params", "flops", "pareto")
COST_METRICS = {"latency": "latency_ms", "params": "params", "flops": "flops"}  # cost -> metric
PARETO_DIRECTIONS = ("maximize", "minimize")  # of objective_vector's (accuracy, cost)


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
    """ValueError for an unknown mode, objective or Pareto cost, or a floor outside [0, 1]."""
    if constraints.mode not in MODES:
        raise ValueError("unknown constraint mode %r: use 'hard' or 'soft'" % (constraints.mode,))
    if constraints.objective not in OBJECTIVES:
        raise ValueError("unknown objective %r: use %s"
                         % (constraints.objective, ", ".join(OBJECTIVES)))
    pareto = constraints.objective == "pareto"
    if (constraints.pareto_cost in COST_METRICS) != pareto:
        raise ValueError("pareto_cost %r with objective %r: the pareto objective needs one of "
                         "%s, the others none" % (constraints.pareto_cost, constraints.objective,
                                                  ", ".join(COST_METRICS)))
    if not 0.0 <= constraints.min_accuracy <= 1.0:
        raise ValueError("min_accuracy %r must be in [0, 1]" % (constraints.min_accuracy,))


def _metric(metrics: Mapping[str, Any], name: str, role: str = "has a bound") -> float:
    """The value of a bounded (or objective) metric as a float; ValueError if missing, NaN or
    negative. ``role`` says why it is needed, for the message."""
    if name not in metrics or metrics[name] is None:
        raise ValueError("metric %r %s but was not measured (metrics: %s)"
                         % (name, role, sorted(metrics)))
    try:
        value = float(metrics[name])
    except (TypeError, ValueError):
        raise ValueError("metric %r must be a number, got %r" % (name, metrics[name])) from None
    if math.isnan(value):
        raise ValueError("metric %r %s but is NaN" % (name, role))
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


def cost_metric(constraints: ConstraintConfig) -> str:
    """The metric the objective minimises (``latency_ms``, ``params`` or ``flops``): that of
    ``objective`` latency/params/flops, or of ``pareto_cost`` with ``pareto``.

    Raises:
      ValueError: the objective is ``accuracy`` (no cost), or unknown.
    """
    _validate_mode(constraints)
    name = constraints.pareto_cost if constraints.objective == "pareto" else constraints.objective
    if name not in COST_METRICS:
        raise ValueError("objective %r minimises no cost" % constraints.objective)
    return COST_METRICS[name]


def cost_reward(cost: float, reference: float) -> float:
    """The larger-is-better reward of a cost: ``1 / (1 + ln(1 + cost / reference))``.

    Args:
      cost: the candidate's cost (>= 0).
      reference: its scale (> 0): the bound on that cost, or 1 unit.

    Returns:
      A float in (0, 1]: 1 at cost 0, 1 / (1 + ln 2) ~ 0.59 at the reference,
      strictly decreasing in the cost.
    """
    return 1.0 / (1.0 + math.log1p(cost / reference))


def _accuracy(accuracy: Any) -> float:
    """``accuracy`` as a finite float; ValueError otherwise."""
    try:
        acc = float(accuracy)
    except (TypeError, ValueError):
        raise ValueError("accuracy must be a number, got %r" % (accuracy,)) from None
    if not math.isfinite(acc):
        raise ValueError("accuracy must be finite, got %r; the candidate should be marked "
                         "failed instead" % (accuracy,))
    return acc


def floor_text(accuracy: float, constraints: ConstraintConfig) -> str:
    """Why ``accuracy`` misses the floor, e.g. ``"val_accuracy 0.612 < min_accuracy 0.8"``;
    "" when it meets it (at the floor counts as meeting it) or there is no floor."""
    if accuracy >= constraints.min_accuracy:
        return ""
    return "val_accuracy %.4g < min_accuracy %.4g" % (accuracy, constraints.min_accuracy)


def reward(accuracy: float, metrics: Mapping[str, Any], constraints: ConstraintConfig) -> float:
    """The reward the controller learns from.

    Args:
      accuracy: validation accuracy of the trained candidate (finite float).
        In hard mode an infeasible candidate is never trained; pass any
        finite placeholder (e.g. 0.0), it is not used.
      metrics: metric name -> value; must hold every bounded metric, and the
        objective's cost metric with objective latency/params/flops.
      constraints: the bounds, mode, soft exponents, floor and objective.

    Returns:
      ``constraints.infeasible_reward`` if under the floor (both modes) or,
      in hard mode, over any bound. Else, with ``base`` the accuracy
      (objective accuracy or pareto) or ``cost_reward(cost, ref)`` (objective
      latency/params/flops, see the module docstring):
      hard: ``base``; soft: ``base * prod_k (m_k / T_k) ** w_k``.
      With no bounds and no floor: ``base`` in both modes.

    Raises:
      ValueError: accuracy is NaN/inf or not a number, a bounded or cost
        metric is missing or NaN, or a metric is 0 while its soft exponent is
        negative (the reward would be infinite).
    """
    acc = _accuracy(accuracy)
    feas = check(metrics, constraints)
    if (constraints.mode == "hard" and not feas.feasible) or floor_text(acc, constraints):
        return float(constraints.infeasible_reward)
    base = acc
    if constraints.objective not in ("accuracy", "pareto"):
        name = cost_metric(constraints)
        base = cost_reward(_metric(metrics, name, "is the objective"),
                           constraints.bounds().get(name, 1.0))
    if constraints.mode == "hard":
        return base
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
    return base * factor


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The critic's judgement of one evaluation.

    Attributes:
      status: 'ok' (trained, or worth training), 'infeasible' (over a bound
        in hard mode, never trained; or trained and under the accuracy
        floor) or 'failed'.
      reward: what the searcher learns from; None when failed or not yet
        trained.
      feasible: within every bound and, once trained, at or above the floor
        (only such a candidate can be the best).
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
       negative soft exponent, a missing cost metric of the objective) is
       failed, reason ``"critic: <problem>"``.
    7. Trained and under the accuracy floor (both modes): infeasible, reward
       ``constraints.infeasible_reward``, reason ``floor_text(...)`` (then
       the evaluator's reason, if any).

    Args:
      metrics: the evaluator's metrics (params, flops, latency_ms,
        memory_mb, val_accuracy when trained), possibly with ``status`` and
        ``reason``.
      constraints: the bounds, mode, soft exponents, floor and objective.
      trained: whether ``metrics`` hold a training result (val_accuracy).

    Returns:
      A Verdict.

    Raises:
      KeyError: ``trained`` but no ``val_accuracy`` (an evaluator bug).
      ValueError: the mode, objective or Pareto cost is unknown, or the floor
        is outside [0, 1].
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
    short = floor_text(float(accuracy), constraints)  # a finite number: reward() checked it
    if short:
        return Verdict("infeasible", value, False, "; ".join(x for x in (short, reason) if x))
    return Verdict("ok", value, feas.feasible, reason)


def is_feasible_for_best(metrics: Mapping[str, Any], constraints: ConstraintConfig) -> bool:
    """Whether a candidate may be reported as the best one: within all bounds, in both modes,
    and at or above the accuracy floor when it has a ``val_accuracy``.

    Raises:
      ValueError: a bounded metric is missing or NaN, or val_accuracy is not
        a finite number.
    """
    acc = metrics.get("val_accuracy")
    under = acc is not None and floor_text(_accuracy(acc), constraints) != ""
    return check(metrics, constraints).feasible and not under


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


def distance(metrics: Mapping[str, Any], constraints: ConstraintConfig) -> Tuple[float, str]:
    """How far a measured candidate is from qualifying, and why.

    Args:
      metrics: the candidate's metrics (``val_accuracy`` when trained).
      constraints: the bounds and floor.

    Returns:
      (``check(...).normalised_violation`` plus, with a floor, the floor
      shortfall ``max(0, 1 - val_accuracy / min_accuracy)``, counted as 1
      when the candidate was never trained; one line: ``check(...).text``
      and ``floor_text``, or "accuracy not measured (never trained)").

    Raises:
      ValueError: a bounded metric is missing or NaN, or val_accuracy is
        not a finite number.
    """
    feas = check(metrics, constraints)
    if constraints.min_accuracy <= 0:
        return feas.normalised_violation, feas.text
    acc = metrics.get("val_accuracy")
    if acc is None:
        return (feas.normalised_violation + 1.0,
                feas.text + "; accuracy not measured (never trained)")
    acc = _accuracy(acc)
    shortfall = max(0.0, 1.0 - acc / constraints.min_accuracy)
    return (feas.normalised_violation + shortfall,
            "; ".join(x for x in (feas.text, floor_text(acc, constraints)) if x))


def closest(records: Sequence[Mapping[str, Any]],
            constraints: ConstraintConfig) -> Optional[Mapping[str, Any]]:
    """The measured record nearest to qualifying (for "no feasible candidate").

    Only records with status 'ok' or 'infeasible' count (their metrics were
    measured); a record whose bounded metrics (or accuracy) are missing or
    NaN is skipped. The choice is the smallest ``distance(...)[0]`` (bounds
    and floor), then the smallest ``index``.

    Args:
      records: trial records (dicts with ``index``, ``status``, ``metrics``).
      constraints: the bounds and floor.

    Returns:
      The chosen record as given, or None when no record counts.
    """
    scored = []
    for r in records:
        if r["status"] not in ("ok", "infeasible"):
            continue
        try:
            scored.append((distance(r["metrics"], constraints)[0], r["index"], r))
        except ValueError:
            continue
    if not scored:
        return None
    return min(scored, key=lambda t: (t[0], t[1]))[2]


# --------------------------------------------------------------------------
# Pareto objective: validation accuracy (max) against one cost (min)
# --------------------------------------------------------------------------
def objective_vector(record: Mapping[str, Any],
                     constraints: ConstraintConfig) -> Tuple[float, float]:
    """The objective vector of a trained record: ``(val_accuracy, cost)``.

    Directions: ``PARETO_DIRECTIONS`` (accuracy maximised, cost minimised),
    e.g. for ``optuna.create_study(directions=PARETO_DIRECTIONS)``.

    Args:
      record: a trial record (its ``metrics`` hold ``val_accuracy`` and the
        cost metric); ``{"metrics": metrics}`` will do.
      constraints: ``objective`` pareto with its ``pareto_cost`` (or a cost
        objective: latency, params or flops).

    Returns:
      (val_accuracy, cost) as floats, cost in the metric's units
      (``cost_metric(constraints)``: latency_ms, params or flops).

    Raises:
      ValueError: the objective has no cost, or a value is missing, not a
        number or not finite.
    """
    name = cost_metric(constraints)
    cost = _metric(record["metrics"], name, "is the objective")
    if not math.isfinite(cost):
        raise ValueError("metric %r is the objective but is infinite" % name)
    return _accuracy(record["metrics"].get("val_accuracy")), cost


def dominates(u: Sequence[float], v: Sequence[float]) -> bool:
    """Whether objective vector ``u`` = (accuracy, cost) dominates ``v``: no worse in both
    (accuracy >=, cost <=) and better in at least one."""
    return u[0] >= v[0] and u[1] <= v[1] and (u[0] > v[0] or u[1] < v[1])


def pareto_front(records: Sequence[Mapping[str, Any]],
                 constraints: ConstraintConfig) -> List[Mapping[str, Any]]:
    """The non-dominated records among the feasible trained ones (the pareto answer).

    Counted: records with status 'ok' and ``feasible`` True (within every
    bound and the floor), the first of each ``arch_hash``. A record
    dominated by another (``dominates`` on ``objective_vector``) is left
    out; records with equal vectors are all kept.

    Args:
      records: trial records, any order.
      constraints: the objective (pareto and its cost, or a cost objective).

    Returns:
      The front's records as given, by cost ascending, then accuracy
      descending, then index; [] when no record counts.

    Raises:
      ValueError: the objective has no cost, or a counted record lacks its
        accuracy or cost (a bug: the critic made it feasible).
    """
    seen, points = set(), []
    for r in sorted(records, key=lambda r: r["index"]):
        if r["status"] != "ok" or r["feasible"] is not True or r["arch_hash"] in seen:
            continue
        seen.add(r["arch_hash"])
        points.append((objective_vector(r, constraints), r))
    # One sweep by cost (O(n log n)): a vector is dominated by the most accurate one of
    # its own cost if less accurate, else by a cheaper one at least as accurate.
    points.sort(key=lambda p: (p[0][1], -p[0][0], p[1]["index"]))
    front, cheaper_best, cost_now, group_best = [], -math.inf, None, -math.inf
    for (acc, cost), r in points:
        if cost != cost_now:
            cheaper_best, cost_now, group_best = max(cheaper_best, group_best), cost, acc
        if acc == group_best and acc > cheaper_best:
            front.append(r)
    return front


def hypervolume(vectors: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """The area dominated by objective vectors (accuracy, cost) up to a reference point.

    The union over the vectors ``(a, c)`` of the rectangles
    ``[reference[0], a] x [c, reference[1]]`` (accuracy above the reference's,
    cost below it); vectors outside contribute nothing. Larger is a better
    front (e.g. to compare searchers at equal evaluations).

    Args:
      vectors: (accuracy, cost) pairs, any order, dominated ones included.
      reference: (worst accuracy, worst cost), e.g. (0.0, the cost bound).

    Returns:
      The area, in accuracy x cost units (0.0 for no vector inside).
    """
    ref_acc, ref_cost = float(reference[0]), float(reference[1])
    inside = sorted((float(c), float(a)) for a, c in vectors if a > ref_acc and c < ref_cost)
    area, best = 0.0, ref_acc
    for k, (cost, acc) in enumerate(inside):
        best = max(best, acc)
        upto = inside[k + 1][0] if k + 1 < len(inside) else ref_cost
        area += (upto - cost) * (best - ref_acc)
    return area


def pareto_order(vectors: Sequence[Sequence[float]]) -> List[int]:
    """Positions of objective vectors, best first, as NSGA-II ranks them.

    By non-dominated rank (0 = the front, 1 = the front once the first is
    removed, ...; ``dominates``), then crowding distance within the rank
    (larger first: the ends of a rank get infinity, an inner vector the sum
    over both objectives of its neighbours' gap divided by the rank's range),
    then position.

    Args:
      vectors: [n] (accuracy, cost) pairs (``objective_vector``).

    Returns:
      list [n]: a permutation of ``range(n)``.
    """
    n = len(vectors)
    rank, remaining, r = [0] * n, set(range(n)), 0
    while remaining:
        front = [i for i in remaining
                 if not any(dominates(vectors[j], vectors[i]) for j in remaining)]
        for i in front:
            rank[i] = r
        remaining -= set(front)
        r += 1
    crowd = [0.0] * n
    for level in range(r):
        members = [i for i in range(n) if rank[i] == level]
        for m in range(2):
            members.sort(key=lambda i: (vectors[i][m], i))
            span = vectors[members[-1]][m] - vectors[members[0]][m]
            crowd[members[0]] = crowd[members[-1]] = math.inf
            for a, i, b in zip(members, members[1:], members[2:]):
                if span > 0:
                    crowd[i] += (vectors[b][m] - vectors[a][m]) / span
    return sorted(range(n), key=lambda i: (rank[i], -crowd[i], i))


def describe_objective(constraints: ConstraintConfig) -> str:
    """What "best" means, in one line, e.g. ``"minimise params within the bounds; accuracy
    floor: val_accuracy >= 0.8"`` or ``"maximise validation accuracy; accuracy floor: none"``."""
    o = constraints.objective
    if o == "accuracy":
        text = "maximise validation accuracy"
    elif o == "pareto":
        text = ("Pareto front of validation accuracy (max) and %s (min)"
                % cost_metric(constraints))
    else:
        text = "minimise %s within the bounds" % cost_metric(constraints)
    floor = ("val_accuracy >= %g" % constraints.min_accuracy if constraints.min_accuracy > 0
             else "none")
    return "%s; accuracy floor: %s" % (text, floor)
