"""What a search tells its user: a line per evaluation and per step, the result, the summary."""
import dataclasses
import math
import os
from typing import Callable, Dict, List, Optional

from autodl_design import critic, records
from autodl_design.config import Config
from autodl_design.interfaces import SearchSpace
from autodl_design.search.run_records import RunRecords


@dataclasses.dataclass
class SearchResult:
    """What a finished (or interrupted) search returns.

    Attributes:
      state: the run's records (``records.RunState``).
      best: the best feasible record, or None.
      closest: without a feasible record, the one nearest to the bounds
        (``critic.closest``), else None.
      seconds: wall time of this process's run (simulated time of the
        whole run in a benchmark run, see ``clock``).
      interrupted: stopped by Ctrl-C.
      steps: the searcher's learning steps.
      restarts: workers restarted.
      searcher_seconds: time spent proposing, learning and checkpointing.
    """
    state: records.RunState
    best: Optional[Dict]
    closest: Optional[Dict]
    seconds: float
    interrupted: bool
    steps: int
    restarts: int
    searcher_seconds: float = 0.0


class Progress:
    """Progress lines of a running search.

    Args:
      config: the run's configuration (budget, time limit).
      run_records: the run's records (state, done_at_start).
      log: callable for the lines.
      clock: the run's clock (``clock.WallClock`` or ``clock.SimulatedClock``).
    """

    def __init__(self, config: Config, run_records: RunRecords, log: Callable[[str], None],
                 clock):
        self.config = config
        self.run_records = run_records
        self.log = log
        self.clock = clock

    def trial(self, r: Dict) -> None:
        """One line for a finished evaluation: status, accuracy, reward, cost, best, time left."""
        state = self.run_records.state
        total = self.config.search.num_models
        m = r["metrics"]
        parts = ["[%d/%d] #%d %s" % (state.num_done, total, r["index"], r["status"])]
        if isinstance(m.get("val_accuracy"), (int, float)):
            parts.append("val_acc %.3f" % m["val_accuracy"])
        if r["reward"] is not None:
            parts.append("reward %.4f" % r["reward"])
        if isinstance(m.get("params"), (int, float)):
            parts.append("params %s" % _si(m["params"]))
        if isinstance(m.get("latency_ms"), (int, float)):
            parts.append("lat %.2f ms" % m["latency_ms"])
        if r["reason"]:
            parts.append("(%s)" % r["reason"][:120])
        best = state.best
        parts.append("| best %s" % ("#%d %.4f" % (best["index"], best["reward"]) if best
                                    else "none feasible yet"))
        elapsed = self.clock.elapsed()
        done_here = max(state.num_done - (0 if self.clock.whole_run
                                          else self.run_records.done_at_start), 1)
        left = (total - state.num_done) * elapsed / done_here
        if self.config.search.max_time > 0:
            left = min(left, self.config.search.max_time - elapsed)
        parts.append("| %.0f %s, ~%.0f s left" % (elapsed, self.clock.label, max(left, 0)))
        self.log(" ".join(parts))

    def step(self, step: int, batch: List[Dict]) -> None:
        """One line after a learning step: the batch's average accuracy and the best so far."""
        state = self.run_records.state
        accs = [r["metrics"].get("val_accuracy") for r in batch]
        accs = [a for a in accs if isinstance(a, (int, float)) and math.isfinite(a)]
        avg = sum(accs) / len(accs) if accs else float("nan")
        best = state.best
        best_text = ("best #%d reward %.4f val_acc %.3f" % (
            best["index"], best["reward"], best["metrics"].get("val_accuracy", float("nan")))
            if best else "no feasible candidate yet")
        self.log("step = %d, average accuracy = %.3f | %d/%d evaluations | %s | %.0f %s"
                 % (step, avg, state.num_done, self.config.search.num_models, best_text,
                    self.clock.elapsed(), self.clock.label))


def summary_text(config: Config, space: SearchSpace, state: records.RunState, seconds: float,
                 run: Optional[SearchResult] = None) -> str:
    """The summary of a search, for the terminal (with ``run``) and report.md (without).

    Args:
      config: the run's configuration.
      space: reads the best candidate back for its description.
      state: the run's records.
      seconds: wall time to report (simulated time in a benchmark run).
      run: the live run's result (controller steps, restarts, interruption),
        None when summarising records after the fact.
    """
    lines = ["=" * 72, "Search summary (%s)" % config.search.log_dir, "=" * 72]
    bounds = config.constraints.bounds()
    lines.append("constraints: %s" % (", ".join("%s <= %g" % kv for kv in bounds.items())
                                      + " (%s mode)" % config.constraints.mode
                                      if bounds else "none"))
    lines.append("objective: %s" % critic.describe_objective(config.constraints))
    shown = state.best
    if shown is None:
        lines.append(critic.NO_FEASIBLE_MESSAGE)
        shown = critic.closest(state.records, config.constraints)
        if shown is not None:
            lines.append("closest candidate: #%d (%s)" % (
                shown["index"], critic.distance(shown["metrics"], config.constraints)[1]))
    if shown is not None:
        lines.extend(_candidate_lines(config, space, shown,
                                      "best" if shown is state.best else "closest"))
    lines.extend(_count_lines(state.records, seconds, run, bool(config.search.benchmark)))
    if run is not None and run.interrupted:
        lines.append("interrupted: continue with --resume --log_dir %s" % config.search.log_dir)
    return "\n".join(lines)


def _candidate_lines(config: Config, space: SearchSpace, r: Dict,
                     label: str = "best") -> List[str]:
    m = r["metrics"]
    lines = ["%s architecture: #%d (step %d, hash %s)"
             % (label, r["index"], r["step"], r["arch_hash"][:12])]
    lines.extend("  " + l for l in space.from_dict(r["arch"]).describe().splitlines())
    rows = [("val accuracy", fmt_number(m.get("val_accuracy"), "%.4f")),
            ("test accuracy", fmt_number(m.get("test_accuracy"), "%.4f")),
            ("reward", fmt_number(r["reward"], "%.4f")),
            ("params", fmt_number(m.get("params"), "%d")),
            ("FLOPs (mult-adds/image)", fmt_number(m.get("flops"), "%d")),
            ("latency (ms, %s)" % m.get("latency_source", "median"),
             fmt_number(m.get("latency_ms"), "%.3f")),
            ("memory (MB, %s)" % m.get("memory_source", "?"),
             fmt_number(m.get("memory_mb"), "%.2f"))]
    if "nb201_index" in m:  # a NAS-Bench-201 cell: its table row
        rows.insert(3, ("NAS-Bench-201 index", fmt_number(m["nb201_index"], "%d")))
    width = max(len(k) for k, _ in rows)
    lines.extend("  %-*s  %s" % (width, k, v) for k, v in rows)
    if label == "best":  # no best.json is written for the closest candidate
        lines.append("  architecture JSON: %s" % os.path.join(config.search.log_dir,
                                                             records.BEST_FILE))
    return lines


def _count_lines(trials: List[Dict], seconds: float, run: Optional[SearchResult],
                 simulated: bool = False) -> List[str]:
    counts = {k: sum(r["status"] == k for r in trials) for k in records.STATUSES}
    n = len(trials)
    hours = seconds / 3600.0
    lines = ["evaluations: %d (ok %d, failed %d, infeasible %d, duplicates %d)"
             % (n, counts["ok"], counts["failed"], counts["infeasible"], counts["duplicate"])]
    rate = "%s time: %.0f s, %.1f evaluations/hour" % (
        "simulated" if simulated else "wall", seconds, n / hours if hours > 0 else 0.0)
    if run is None:
        return lines + [rate]
    if simulated:
        share = "real time"
    else:
        share = "%.1f%% of wall time" % (100.0 * run.searcher_seconds / seconds if seconds
                                         else 0.0)
    lines.append("%s, %d controller steps taking %.1f s (%s)%s"
                 % (rate, run.steps, run.searcher_seconds, share,
                    ", %d worker restarts" % run.restarts if run.restarts else ""))
    return lines


def fmt_number(v, pattern: str = "%.4f") -> str:
    """``pattern % v`` for a finite number, else "n/a"."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return pattern % v
    return "n/a"


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return "%.2f%s" % (x / scale, unit)
    return "%g" % x
