"""Evaluates one candidate the way every trainer does: cheap metrics first, then training."""
import math
import statistics
from typing import Callable, Dict, List, Optional, Sequence

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


def median_thresholds(histories: Sequence[Sequence[float]], epochs: int,
                      min_candidates: int = 3) -> List[Optional[float]]:
    """Per-epoch median validation accuracy of earlier candidates.

    Args:
      histories: per-epoch validation accuracies of earlier candidates (a
        candidate stopped early contributes only the epochs it ran).
      epochs: epochs of a full training run.
      min_candidates: fewer earlier values than this at an epoch -> None
        (no culling at that epoch).

    Returns:
      float or None per epoch 1..epochs (list index = epoch - 1).
    """
    out: List[Optional[float]] = []
    for e in range(epochs):
        values = [h[e] for h in histories if len(h) > e and math.isfinite(h[e])]
        out.append(statistics.median(values) if len(values) >= min_candidates else None)
    return out


def median_stopper(thresholds: Sequence[Optional[float]],
                   start_epoch: int) -> Callable[[int, float], bool]:
    """The trainer's ``on_epoch`` callback of the median stopping rule.

    Returns a function ``(epoch, val_accuracy) -> keep_training`` that stops a
    candidate at epoch ``e >= start_epoch`` when its validation accuracy is
    below the median of earlier candidates at the same epoch.
    """
    def on_epoch(epoch: int, val_accuracy: float) -> bool:
        if epoch < start_epoch or epoch > len(thresholds):
            return True
        t = thresholds[epoch - 1]
        return t is None or val_accuracy >= t
    return on_epoch
