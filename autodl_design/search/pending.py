"""The open batches of a search and their persistence in ``pending.json``, for --resume."""
import dataclasses
import json
import os
from typing import Callable, Dict, List, Optional

from autodl_design import records
from autodl_design.interfaces import Candidate, SearchSpace, Searcher
from autodl_design.search.run_records import PENDING_FILE, disk_error


@dataclasses.dataclass
class Batch:
    """One batch of candidates proposed together and learned from together.

    Attributes:
      step: the controller step that learns from it.
      indices: evaluation index of each candidate (consecutive).
      candidates: the proposed candidates, in proposal order.
      proposed_at: the searcher's step when it was proposed.
      queue: positions (into ``candidates``) not yet dispatched, in order.
      rung: with an epoch-budget scheduler, the rung's ``{"bracket", "rung",
        "epochs", "last"}`` (``autodl_design.search.schedulers``); else None.
      parents: a promotion's indices whose saved weights each candidate
        continues from (None for batches the searcher proposed).
    """
    step: int
    indices: List[int]
    candidates: List[Candidate]
    proposed_at: int
    queue: List[int]
    rung: Optional[Dict] = None
    parents: Optional[List[int]] = None

    @classmethod
    def open(cls, step: int, first: int, candidates: List[Candidate],
             proposed_at: int, rung: Optional[Dict] = None,
             parents: Optional[List[int]] = None) -> "Batch":
        """A batch whose candidates get indices first, first + 1, ... and are all queued."""
        n = len(candidates)
        return cls(step=step, indices=[first + k for k in range(n)],
                   candidates=list(candidates), proposed_at=proposed_at, queue=list(range(n)),
                   rung=rung, parents=parents)

    def to_json(self) -> Dict:
        """The batch as saved in pending.json (``rung``/``parents`` only when set)."""
        d = {"step": self.step, "first_index": self.indices[0], "proposed_at": self.proposed_at,
             "archs": [c.to_dict() for c in self.candidates]}
        if self.rung is not None:
            d.update(rung=self.rung, parents=self.parents)
        return d


class PendingFile:
    """``log_dir/pending.json``: the batches open when the run stopped.

    Args:
      log_dir: the run's folder.
      space: turns saved candidates back into candidates.
    """

    def __init__(self, log_dir: str, space: SearchSpace):
        self.path = os.path.join(log_dir, PENDING_FILE)
        self.space = space

    def save(self, batches: List[Batch]) -> None:
        """Replaces pending.json (atomically) with ``batches``.

        Raises:
          SearchError: the file system refused the write (disk full).
        """
        try:
            records.atomic_write_json(self.path, {"batches": [b.to_json() for b in batches]})
        except OSError as e:
            raise disk_error("the open batches", self.path, e) from None

    def restore(self, searcher: Searcher, log: Callable[[str], None]) -> List[Batch]:
        """Re-creates the batches that were open when the run stopped ([] without pending.json).

        Batches proposed before the restored checkpoint are read back from
        pending.json; batches proposed after it are proposed again (which
        advances the searcher's random state exactly as the stopped run did)
        and checked against what was recorded.
        """
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            saved = json.load(f)["batches"]
        step = searcher.step
        batches = []
        for b in saved:
            promotion = b.get("parents") is not None  # a scheduler's; never learned from
            if b["step"] < step and not promotion:
                continue  # learned from before the checkpoint
            recorded = [self.space.from_dict(d) for d in b["archs"]]
            if b["proposed_at"] >= step and not promotion:
                again = searcher.propose(len(recorded))
                if [c.hash() for c in again] != [c.hash() for c in recorded]:
                    log("warning: the resumed searcher proposed a different batch for step %d "
                        "than the stopped run; continuing with the recorded batch" % b["step"])
            batches.append(Batch.open(b["step"], b["first_index"], recorded, b["proposed_at"],
                                      b.get("rung"), b.get("parents")))
        return batches
