"""Evaluates one candidate the way every trainer does: cheap metrics first, then training.

Device failures are handled here for every evaluator: a candidate that runs
out of memory is infeasible ("out of memory on gpu:N"; the critic gives it
the infeasible reward and duplicates reuse it), and an error naming CUDA or
cuDNN raises ``DeviceFault`` so that the worker reports it and exits (the
device may be in a bad state; the pool starts a fresh worker).
"""
import re
from typing import Callable, Dict, Optional, Sequence

from autodl_design import critic
from autodl_design.arch import Architecture
from autodl_design.config import ConstraintConfig


class WorkerSetupError(Exception):
    """A worker cannot start because of the user's input (a missing data folder, an absent
    device, an unreadable latency table); the message is one line naming the problem."""


class DeviceFault(Exception):
    """The device failed (a CUDA or cuDNN error): the worker reports the candidate failed
    with this message and exits, and the pool replaces it."""


_OOM = re.compile(r"out of memory|MemoryError|ResourceExhausted", re.IGNORECASE)
_DEVICE = re.compile(r"\bCUDA\b|cuDNN|CUBLAS|cuBLAS|\bNCCL\b|CUDNN")


def failure_kind(reason: str) -> str:
    """'oom' (out of memory), 'device' (names CUDA/cuDNN) or '' for a failure's reason."""
    if _OOM.search(reason):
        return "oom"
    if _DEVICE.search(reason):
        return "device"
    return ""


def out_of_memory(metrics: Dict, device: str) -> Dict:
    """``metrics`` as an infeasible candidate: "out of memory on <device>" plus the detail."""
    detail = " ".join(str(metrics.get("reason", "")).split())[:300]
    return dict(metrics, status="infeasible",
                reason="out of memory on %s%s" % (device, ": " + detail if detail else ""))


def device_failures(metrics: Dict, device: str, on_failure: Callable[[], None]) -> Dict:
    """Applies the device rules (module docstring) to an evaluator's failed ``metrics``.

    Args:
      metrics: the result; only status 'failed' is looked at.
      device: how the reason names the device (``devices.device_label``).
      on_failure: called after any failed candidate, e.g. to empty the GPU
        allocator's cache.

    Raises:
      DeviceFault: the reason names CUDA or cuDNN (and is not out of memory).
    """
    if metrics.get("status") != "failed":
        return metrics
    on_failure()
    kind = failure_kind(str(metrics.get("reason", "")))
    if kind == "oom":
        return out_of_memory(metrics, device)
    if kind == "device":
        raise DeviceFault("device error on %s: %s" % (device, metrics["reason"]))
    return metrics


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
