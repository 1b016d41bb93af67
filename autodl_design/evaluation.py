"""Evaluates one candidate the way every trainer does: cheap metrics first, then training."""
from typing import Callable, Dict, Optional, Sequence

from autodl_design import critic
from autodl_design.arch import Architecture
from autodl_design.config import ConstraintConfig


class WorkerSetupError(Exception):
    """A worker cannot start because of the user's input (a missing data folder, an absent
    device, an unreadable latency table); the message is one line naming the problem."""


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
      reason for the last two). The gate is ``critic.verdict(hardware,
      constraints, trained=False)``: a candidate it does not pass ('infeasible',
      or 'failed' for an unmeasurable bounded metric) is not trained.
    """
    hardware = measure(arch)
    gate = critic.verdict(hardware, constraints, trained=False)
    if gate.status != "ok":
        return dict(hardware, status=gate.status, reason=gate.reason)
    result = dict(hardware)
    result.update(train(arch))
    return result


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
