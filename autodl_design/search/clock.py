"""The clock a search asks for its time budget and progress: wall time, or simulated time.

A normal search counts wall seconds since this process started. A
``--benchmark`` search counts simulated seconds: the sum of the ``seconds``
of its finished records that are not duplicates (an evaluated cell costs its
table training time, a repeated or never-trained one nothing), over the
whole run, records from before a ``--resume`` included.
"""
import math
import time
from typing import Dict, Iterable

from autodl_design.config import Config
from autodl_design.search.run_records import RunRecords


def record_cost(record: Dict) -> float:
    """Simulated seconds a record cost: its ``seconds``, 0 for a duplicate or without any."""
    s = record.get("seconds")
    if record.get("status") == "duplicate" or isinstance(s, bool) or not isinstance(
            s, (int, float)) or not math.isfinite(s):
        return 0.0
    return float(s)


def simulated_seconds(records: Iterable[Dict]) -> float:
    """Simulated seconds spent by ``records`` (sum of ``record_cost``)."""
    return float(sum(record_cost(r) for r in records))


class WallClock:
    """Wall seconds since the clock was made (this process's share of the run).

    Attributes:
      label: how its seconds are named in progress lines.
      whole_run: False: it counts only this process's evaluations.
    """

    label = "s"
    whole_run = False

    def __init__(self):
        self.start = time.time()

    def elapsed(self) -> float:
        return time.time() - self.start


class SimulatedClock:
    """Simulated seconds of a benchmark run, summed from its records (resumed ones included).

    Args:
      run_records: the run's records; read at every call (the sum is kept
        incrementally, records are only ever appended).
    """

    label = "simulated s"
    whole_run = True

    def __init__(self, run_records: RunRecords):
        self.run_records = run_records
        self._state = None
        self._counted = 0
        self._total = 0.0

    def elapsed(self) -> float:
        state = self.run_records.state
        if state is not self._state:  # opened or resumed: count from the start
            self._state, self._counted, self._total = state, 0, 0.0
        new = state.records[self._counted:]
        self._total += simulated_seconds(new)
        self._counted += len(new)
        return self._total


def make_clock(config: Config, run_records: RunRecords):
    """The clock of ``config``'s run: simulated for a ``--benchmark`` run, else wall time."""
    return SimulatedClock(run_records) if config.search.benchmark else WallClock()
