"""Evaluates one candidate the way every trainer does: cheap metrics first, then training."""
from typing import Callable, Dict

from autodl_design import critic
from autodl_design.arch import Architecture
from autodl_design.config import ConstraintConfig


def evaluate_candidate(arch: Architecture, constraints: ConstraintConfig,
                       measure: Callable[[Architecture], Dict],
                       train: Callable[[Architecture], Dict]) -> Dict:
    """Measures the cheap metrics, checks the bounds, and trains only if worth it.

    Args:
      arch: the candidate.
      constraints: the user's bounds; in hard mode a candidate over a bound
        is never trained.
      measure: arch -> dict with params, flops, latency_ms, memory_mb, ...
      train: arch -> dict with status, val_accuracy, ... (never raises for a
        failed candidate; it reports status 'failed').

    Returns:
      The metrics of both, with status 'ok', 'failed' or 'infeasible' (and a
      reason for the last two).
    """
    hardware = measure(arch)
    feasibility = critic.check(hardware, constraints)
    if constraints.mode == "hard" and not feasibility.feasible:
        return dict(hardware, status="infeasible", reason=feasibility.text)
    result = dict(hardware)
    result.update(train(arch))
    return result
