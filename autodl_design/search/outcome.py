"""The reward policy: a worker's metrics become a trial record through the critic's verdict."""
import time
from typing import Any, Dict, Optional

from autodl_design import critic
from autodl_design.config import Config
from autodl_design.interfaces import Candidate
from autodl_design.records import TrialRecord
from autodl_design.search.early_termination import stopped_early_reason
from autodl_design.search.run_records import REUSABLE

WORKER_ONLY = ("status", "reason", "traceback")  # metrics keys the record keeps elsewhere


def judge(config: Config, step: int, index: int, candidate: Candidate, metrics: Dict,
          worker: Any, device: str, rung: Optional[Dict] = None) -> TrialRecord:
    """The record of one evaluation, judged by ``critic.verdict``.

    Args:
      config: the run's configuration (constraints; epochs for the
        early-termination reason).
      step: the batch's controller step.
      index: the evaluation index.
      candidate: what was evaluated.
      metrics: the evaluator's result (``status`` required, see
        ``interfaces.Evaluator.evaluate``).
      worker, device: where it ran.
      rung: the record's ``rung`` (epoch-budget schedulers), else None.

    Returns:
      The TrialRecord (not yet written).
    """
    v = critic.verdict(metrics, config.constraints, trained=metrics["status"] == "ok")
    reason = v.reason
    if v.status == "ok" and metrics.get("stopped_early"):
        reason = stopped_early_reason(metrics, config.trainer.early_stop)
    return TrialRecord(
        step=step, index=index, arch=candidate.to_dict(), arch_hash=candidate.hash(),
        metrics={k: x for k, x in metrics.items() if k not in WORKER_ONLY}, reward=v.reward,
        feasible=v.feasible, status=v.status, reason=reason, worker=worker, device=device,
        seconds=metrics.get("seconds"), time=time.time(), rung=rung)


def duplicate(step: int, index: int, candidate: Candidate, source: Dict,
              rung: Optional[Dict] = None) -> TrialRecord:
    """The record of a candidate equal to the evaluated ``source``, reusing its result."""
    return TrialRecord(
        step=step, index=index, arch=candidate.to_dict(), arch_hash=source["arch_hash"],
        metrics=source["metrics"], reward=source["reward"], feasible=source["feasible"],
        status="duplicate", reason="same architecture as #%d (%s); result reused"
        % (source["index"], source["status"]), worker=None, device="", seconds=0.0,
        time=time.time(), rung=rung)


def learning_reward(record: Dict) -> Optional[float]:
    """The reward the searcher learns from for ``record``; None (not learned from) when failed."""
    usable = record["status"] in REUSABLE or (record["status"] == "duplicate"
                                              and record["reward"] is not None)
    return record["reward"] if usable else None
