"""Several searches side by side: the running best of each, against evaluations and time.

Usage: ``python -m autodl_design.search.report --compare DIR DIR ... [--out FOLDER]``
(e.g. rl vs random vs evolution, hyperband vs plain evaluation, or two seeds).
Reads each ``DIR/trials.jsonl`` and ``DIR/config.json``; writes
``FOLDER/compare.png`` (running best reward of each search against
evaluations and against wall time, simulated time for ``--benchmark`` runs)
and ``FOLDER/compare.md`` (one table row per search), and prints the table.
"""
import dataclasses
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

from autodl_design import records
from autodl_design.search.progress import fmt_number

DEFAULT_OUT = "compare"


@dataclasses.dataclass
class Run:
    """One search read back for comparison.

    Attributes:
      label: how the plot and the table name it (the folder's name, or its
        path when two folders share a name).
      folder: the log folder.
      searcher, scheduler: what ran (scheduler "none" for runs without one).
      trials: its records, in file (finishing) order.
      minutes: index -> minutes since the run started when the record finished.
      simulated: a ``--benchmark`` run (minutes of simulated time).
    """
    label: str
    folder: str
    searcher: str
    scheduler: str
    trials: List[Dict]
    minutes: Dict[int, float]
    simulated: bool


def read_runs(folders: Sequence[str]) -> List[Run]:
    """The searches in ``folders``, labelled.

    Raises:
      ValueError: no folder given, or a folder without search records or
        without a readable config.json (one line naming it).
    """
    from autodl_design.search import report
    if not folders:
        raise ValueError("--compare needs at least one search folder: --compare DIR DIR ...")
    names = [os.path.basename(os.path.normpath(f)) for f in folders]
    runs = []
    for folder, name in zip(folders, names):
        trials = records.read_trials(os.path.join(folder, records.TRIALS_FILE))
        if not trials:
            raise ValueError("%s holds no search records (no %s): give folders of searches"
                             % (folder, records.TRIALS_FILE))
        config = report.read_config(folder)
        label = name if names.count(name) == 1 else os.path.normpath(folder)
        simulated = bool(config.search.benchmark)
        runs.append(Run(label, folder, config.search.searcher, config.search.scheduler, trials,
                        report.elapsed_minutes(trials, simulated), simulated))
    return runs


def _eligible(t: Dict) -> Optional[float]:
    """The record's reward if it may be the best (ok, feasible, finite), else None."""
    r = t.get("reward")
    if (t["status"] == "ok" and t["feasible"] and isinstance(r, (int, float))
            and not isinstance(r, bool) and math.isfinite(r)):
        return float(r)
    return None


def running_best(run: Run, by: str) -> Tuple[List[float], List[float]]:
    """(x, best reward so far) at every record that improved the best.

    Args:
      by: "index" (x = evaluations done, 1-based) or "time" (x = minutes).
    """
    if by == "index":
        order = sorted(run.trials, key=lambda t: t["index"])
        xs = [float(t["index"] + 1) for t in order]
    else:
        order = sorted(run.trials, key=lambda t: run.minutes[t["index"]])
        xs = [run.minutes[t["index"]] for t in order]
    out_x, out_y, best = [], [], -math.inf
    for x, t in zip(xs, order):
        r = _eligible(t)
        if r is not None and r > best:
            best = r
            out_x.append(x)
            out_y.append(best)
    return out_x, out_y


def summary_row(run: Run) -> Dict:
    """One table row: what ran, how much, the best reward and accuracies and when."""
    best, best_t = None, None
    for t in sorted(run.trials, key=lambda t: t["index"]):
        r = _eligible(t)
        if r is not None and (best is None or r > best):
            best, best_t = r, t
    m = best_t["metrics"] if best_t is not None else {}
    return {"label": run.label, "searcher": run.searcher, "scheduler": run.scheduler,
            "evaluations": len(run.trials),
            "candidates": len({t["arch_hash"] for t in run.trials}),
            "minutes": max(run.minutes.values()), "best_reward": best,
            "val_accuracy": m.get("val_accuracy"), "test_accuracy": m.get("test_accuracy"),
            "best_index": best_t["index"] if best_t is not None else None,
            "best_minutes": run.minutes[best_t["index"]] if best_t is not None else None}


def table_lines(rows: Sequence[Dict]) -> List[str]:
    """The rows as a Markdown table."""
    lines = ["| search | searcher | scheduler | evaluations | candidates | minutes "
             "| best reward | its val acc | its test acc | found at (#, min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        found = ("#%d, %.1f" % (r["best_index"], r["best_minutes"])
                 if r["best_index"] is not None else "none feasible")
        lines.append("| %s | %s | %s | %d | %d | %.1f | %s | %s | %s | %s |" % (
            r["label"], r["searcher"], r["scheduler"], r["evaluations"], r["candidates"],
            r["minutes"], fmt_number(r["best_reward"]), fmt_number(r["val_accuracy"]),
            fmt_number(r["test_accuracy"]), found))
    return lines


def plot(runs: Sequence[Run], path: str) -> None:
    """The running best reward of every run against evaluations (left) and time (right)."""
    from autodl_design.search.report import _plt
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for k, run in enumerate(runs):
        color = plt.get_cmap("tab10")(k % 10)
        for ax, by in zip(axes, ("index", "time")):
            xs, ys = running_best(run, by)
            if xs:
                end = (len(run.trials) if by == "index" else max(run.minutes.values()))
                ax.step(xs + [end], ys + [ys[-1]], where="post", color=color, lw=1.6,
                        label=run.label)
                ax.scatter(xs, ys, s=10, color=color)
    kinds = {"simulated" if r.simulated else "wall" for r in runs}
    for ax, label in zip(axes, ("evaluations", "%s time (min)" % " or ".join(sorted(kinds)))):
        ax.set_xlabel(label)
        ax.set_ylabel("best feasible reward so far")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_compare(folders: Sequence[str], out: str = DEFAULT_OUT) -> Tuple[str, List[str]]:
    """Reads the searches, writes ``out/compare.png`` and ``out/compare.md``.

    Returns:
      (path of compare.md, the table's lines).

    Raises:
      ValueError: a folder that holds no search, or ``out`` is a file
        (checked before anything is written).
    """
    runs = read_runs(folders)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError("--out %s is a file, not a folder: choose another --out" % out)
    os.makedirs(out, exist_ok=True)
    plot(runs, os.path.join(out, "compare.png"))
    lines = table_lines([summary_row(r) for r in runs])
    text = ["# Searches compared", ""] + lines + ["", "![running best](compare.png)", ""]
    path = os.path.join(out, "compare.md")
    records.atomic_write_text(path, "\n".join(text))
    return path, lines


def parse_args(args: Sequence[str]) -> Tuple[List[str], str]:
    """(folders, out) from the words after ``--compare``.

    Raises:
      ValueError: ``--out`` without a folder, or an unknown option.
    """
    folders, out, k = [], DEFAULT_OUT, 0
    while k < len(args):
        a = args[k]
        if a == "--out" or a.startswith("--out="):
            if a == "--out" and k + 1 >= len(args):
                raise ValueError("--out needs a folder: --compare DIR DIR ... --out FOLDER")
            out = a.split("=", 1)[1] if "=" in a else args[k + 1]
            k += 1 if "=" in a else 2
            continue
        if a.startswith("--"):
            raise ValueError("unknown option %s: use --compare DIR DIR ... [--out FOLDER]" % a)
        folders.append(a)
        k += 1
    return folders, out
