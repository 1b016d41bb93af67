"""A pool of one worker that is this process: evaluates each candidate as it is submitted.

For evaluators that take microseconds (a benchmark table's look-up) and for
tests: no worker process, no pickling; an exception escaping the evaluator
is raised here with its own traceback (a bug of the project).
"""
import time
from typing import Dict, List, Optional, Tuple

from autodl_design.interfaces import Evaluator


class InlinePool:
    """An ``interfaces.Pool`` evaluating one candidate at a time in the calling process.

    Args:
      evaluator: set up by ``start``, then asked for each submitted candidate.
      device: the device named in records (and given to ``evaluator.setup``).
      threads: given to ``evaluator.setup``.
      delay: seconds slept before each evaluation (0: none); lets a test
        stop a fast run half-way.

    Attributes:
      devices: ``[device]``: the one worker, number 0.
      restarts: always 0.
    """

    def __init__(self, evaluator: Evaluator, device: str = "cpu", threads: int = 1,
                 delay: float = 0.0):
        self.evaluator = evaluator
        self.devices: List[str] = [device]
        self.restarts = 0
        self.threads = threads
        self.delay = float(delay)
        self._done: Optional[Tuple[int, int, Dict]] = None
        self._started = False

    def start(self) -> None:
        """Sets the evaluator up (its errors propagate, e.g. ``WorkerSetupError``)."""
        self.evaluator.setup(self.devices[0], self.threads)
        self._started = True

    def free_workers(self) -> List[int]:
        """[0] while no finished result waits to be collected, else []."""
        return [] if self._done is not None else [0]

    def submit(self, worker: int, index: int, candidate: Dict, seed: int,
               options: Dict) -> None:
        """Evaluates ``candidate`` now; ``next_result`` hands its metrics over.

        Raises:
          RuntimeError: not started, or worker 0 is not free (a caller's bug).
        """
        if not self._started or worker != 0 or self._done is not None:
            raise RuntimeError("InlinePool.submit: worker %r is not free (started: %s)"
                               % (worker, self._started))
        if self.delay > 0:
            time.sleep(self.delay)
        self._done = (0, index, self.evaluator.evaluate(candidate, index, seed, options))

    def next_result(self, timeout: float = 1.0) -> Optional[Tuple[int, int, Dict]]:
        """The submitted candidate's (0, index, metrics), or None at once when none is waiting."""
        done, self._done = self._done, None
        return done

    def busy(self) -> int:
        return int(self._done is not None)

    def terminate(self) -> None:
        """Nothing runs in the background: drops an uncollected result."""
        self._done = None
