"""Median early termination: per-epoch thresholds from earlier candidates, sent to trainers."""
import math
import statistics
from typing import Dict, List, Optional, Sequence

from autodl_design.config import Config


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


def task_options(config: Config, records: Sequence[Dict], step: int) -> Dict:
    """Trainer options of the candidates of batch ``step``: the median rule's thresholds.

    The thresholds of batch ``step`` come only from batches that were learned
    from before it was proposed (steps <= step - 1 - lookahead), so they do
    not depend on timing.

    Args:
      config: the run's configuration.
      records: the trial records so far (dicts).
      step: the batch's controller step.

    Returns:
      {} without early termination, else ``{"cull": [threshold or None per
      epoch], "cull_start_epoch": int}`` (see ``evaluation.median_stopper``).
    """
    if config.search.early_termination != "median":
        return {}
    limit = step - 1 - config.search.lookahead
    histories = [r["metrics"]["val_history"] for r in records
                 if r["step"] <= limit and r["status"] == "ok"
                 and isinstance(r["metrics"].get("val_history"), list)]
    return {"cull": median_thresholds(histories, config.trainer.early_stop),
            "cull_start_epoch": config.search.cull_start_epoch}


def stopped_early_reason(metrics: Dict, epochs: int) -> str:
    """The record's reason for a candidate the median rule stopped (``stopped_early``)."""
    return ("stopped early after epoch %d of %d: validation accuracy below the median of "
            "earlier candidates" % (metrics.get("epochs", 0), epochs))
