"""Readable results of a search: PNG plots, cell drawings and a Markdown summary.

Usage: ``python -m autodl_design.search.report DIR`` or ``... --log_dir DIR`` (also run at the end
of every search); ``... --compare DIR DIR ... [--out FOLDER]`` compares searches
(``autodl_design.search.compare``). Reads ``DIR/trials.jsonl`` and ``DIR/config.json``; writes
``DIR/report/``:

* ``progress.png``: reward and validation accuracy per evaluation with the
  running best, against evaluations and against wall time (simulated time
  for a ``--benchmark`` run);
* ``tradeoffs.png``: accuracy against parameters and against latency, with
  the feasible region shaded and the Pareto front marked;
* ``best_normal_cell.png`` / ``best_reduction_cell.png``: the best cells as DAGs
  (candidates with cells, i.e. of the cell space);
* ``oneshot.png`` (one-shot runs): the supernet's training curves;
* ``scale.png`` (``--search_space`` with scale decisions): validation accuracy
  against latency, coloured by ``width_mult``, marker by ``depth``;
* ``report.md``: the search summary (the one the search printed, from
  ``progress.summary_text``), the searcher and latency source, and the best
  candidates (with ``--search_space``, also a table of their decisions),
  linking the PNGs.
"""
import json
import logging
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

from autodl_design import critic, records
from autodl_design.arch import Cell
from autodl_design.recipe import SCALE_DECISIONS, RecipeSpace
from autodl_design.config import Config
from autodl_design.search.clock import record_cost
from autodl_design.search import oneshot_report
from autodl_design.search.progress import fmt_number, summary_text
from autodl_design.search.searchers import make_space

REPORT_DIR = "report"
STATUS_COLORS = {"ok": "tab:blue", "infeasible": "tab:red", "failed": "black",
                 "duplicate": "tab:gray"}


def _num(v) -> Optional[float]:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


QUIET_LOGGERS = ("matplotlib", "PIL")  # their INFO lines would land in the search's output


def _first_start(trials: List[Dict]) -> float:
    """Unix time the first evaluation started: finish time minus its seconds (0 if unknown)."""
    starts = []
    for t in trials:
        seconds = _num(t.get("seconds"))
        starts.append(t["time"] - (seconds if seconds is not None else 0.0))
    return min(starts)


def elapsed_minutes(trials: List[Dict], simulated: bool) -> Dict[int, float]:
    """Index -> minutes since the run started when each record finished.

    Wall time from the records' ``time`` (and ``seconds``), or, for a
    ``--benchmark`` run (``simulated``), the simulated time spent up to and
    including each record, in the order the records were written.
    """
    if not simulated:
        start = _first_start(trials)
        return {t["index"]: (t["time"] - start) / 60.0 for t in trials}
    out, total = {}, 0.0
    for t in trials:
        total += record_cost(t)
        out[t["index"]] = total / 60.0
    return out


def _plt():
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def pareto_front(points: Sequence[tuple]) -> List[int]:
    """Indices of the points (cost, accuracy) no other point dominates (``critic.dominates``:
    the critic's one rule), by cost; equal points are all kept."""
    vectors = [(p[1], p[0]) for p in points]  # the critic's (accuracy, cost)
    front = [k for k, v in enumerate(vectors) if not any(critic.dominates(u, v) for u in vectors)]
    return sorted(front, key=lambda k: (points[k][0], -points[k][1], k))


def plot_progress(trials: List[Dict], path: str, simulated: bool = False):
    """Reward and validation accuracy against evaluations and time (simulated: see
    ``elapsed_minutes``)."""
    plt = _plt()
    minutes = elapsed_minutes(trials, simulated)
    trials = sorted(trials, key=lambda t: t["index"])
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for col, xkey in enumerate(("index", "time")):
        for row, (name, get) in enumerate((
                ("reward", lambda t: _num(t["reward"])),
                ("validation accuracy", lambda t: _num(t["metrics"].get("val_accuracy"))))):
            ax = axes[row][col]
            xs_best, ys_best, best = [], [], -math.inf
            for t in sorted(trials, key=lambda t: (t["index"] if xkey == "index"
                                                   else minutes[t["index"]])):
                x = t["index"] if xkey == "index" else minutes[t["index"]]
                y = get(t)
                if y is None:
                    continue
                ax.scatter([x], [y], s=14, color=STATUS_COLORS.get(t["status"], "tab:blue"))
                eligible = name != "reward" or (t["status"] == "ok" and t["feasible"])
                if eligible and y > best:
                    best = y
                if best > -math.inf:
                    xs_best.append(x)
                    ys_best.append(best)
            if xs_best:
                ax.step(xs_best, ys_best, where="post", color="tab:orange",
                        label="running best" + (" (feasible)" if name == "reward" else ""))
                ax.legend(loc="lower right", fontsize=8)
            ax.set_xlabel("evaluation" if xkey == "index" else
                          "%s time (min)" % ("simulated" if simulated else "wall"))
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=s)
               for s, c in STATUS_COLORS.items()]
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tradeoffs(trials: List[Dict], bounds: Dict[str, float], path: str):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    seen = {}
    for t in trials:
        if t["status"] in ("ok", "duplicate") and _num(t["metrics"].get("val_accuracy")) is not None:
            seen.setdefault(t["arch_hash"], t)
    cands = list(seen.values())
    for ax, key, label in ((axes[0], "params", "parameters"),
                           (axes[1], "latency_ms", "latency (ms)")):
        pts = [(_num(t["metrics"].get(key)), t["metrics"]["val_accuracy"], t) for t in cands]
        pts = [p for p in pts if p[0] is not None]
        if not pts:
            ax.text(0.5, 0.5, "no trained candidate with %s" % label, ha="center",
                    transform=ax.transAxes)
            continue
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        ax.scatter(xs, ys, s=16, color="tab:blue", alpha=0.7, label="trained candidates")
        front = pareto_front([(p[0], p[1]) for p in pts])
        fx = [xs[k] for k in front]
        fy = [ys[k] for k in front]
        ax.step(fx, fy, where="post", color="tab:orange", lw=1.5)
        ax.scatter(fx, fy, s=40, facecolors="none", edgecolors="tab:orange", label="Pareto front")
        if key in bounds:
            ax.axvspan(min(xs + [bounds[key]]) * 0.9, bounds[key], color="tab:green", alpha=0.12,
                       label="feasible (%s <= %g)" % (key, bounds[key]))
            ax.axvline(bounds[key], color="tab:green", lw=1)
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _layers(cell: Cell) -> List[int]:
    depth = [0] * cell.num_nodes
    for j in range(cell.num_nodes):
        preds = cell.predecessors(j)
        depth[j] = 1 + max((depth[i] for i in preds), default=0)
    return depth


def draw_cell(cell: Cell, title: str, path: str):
    """Draws a cell as a layered DAG: input, nodes (op names), output."""
    plt = _plt()
    depth = _layers(cell)
    last = max(depth) + 1
    by_layer: Dict[int, List[int]] = {}
    for v, d in enumerate(depth):
        by_layer.setdefault(d, []).append(v)
    width = max(len(v) for v in by_layer.values())
    pos = {"in": (0.0, (width - 1) / 2.0), "out": (float(last), (width - 1) / 2.0)}
    for d, nodes in by_layer.items():
        off = (width - len(nodes)) / 2.0
        for k, v in enumerate(nodes):
            pos[v] = (float(d), off + k)
    fig, ax = plt.subplots(figsize=(1.9 * (last + 1), 2.4 + 1.2 * max(width, 2)))
    edges = [(i, j) for i in range(cell.num_nodes) for j in cell.successors(i)]
    edges += [("in", j) for j in range(cell.num_nodes) if not cell.predecessors(j)]
    edges += [(i, "out") for i in cell.output_nodes()]
    for a, b in edges:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        span = x1 - x0
        # Edges that skip layers bend away from the nodes they pass,
        # alternately above and below.
        rad = 0.08 if span <= 1 else min(0.3, 0.06 * span + 0.06)
        parity = sum(v if isinstance(v, int) else 0 for v in (a, b)) + (b == "out")
        if span > 1 and parity % 2:
            rad = -rad
        ax.annotate("", xy=(x1 - 0.28, y1), xytext=(x0 + 0.28, y0),
                    arrowprops=dict(arrowstyle="->", color="0.35", lw=0.9, alpha=0.8,
                                    shrinkA=4, shrinkB=4,
                                    connectionstyle="arc3,rad=%.2f" % rad))
    for v, (x, y) in pos.items():
        if v in ("in", "out"):
            text, color = ("cell input" if v == "in" else "concat + 1x1"), "#dddddd"
        else:
            text = "%d: %s" % (v, cell.ops[v])
            color = "#cfe2f3" if "pool" in cell.ops[v] else "#fde9c9"
        ax.text(x, y, text, ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round,pad=0.35", fc=color, ec="0.4"))
    ax.set_xlim(-0.6, last + 0.6)
    ax.set_ylim(-1.6, max(width, 2) + 0.6)
    ax.invert_yaxis()
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(log_dir: str, top: int = 5) -> str:
    """Builds ``log_dir/report/``; returns the path of report.md.

    Raises:
      ValueError: the folder holds no search records, or its config.json is
        missing or unreadable.
    """
    trials = records.read_trials(os.path.join(log_dir, records.TRIALS_FILE))
    if not trials:
        raise ValueError("%s holds no search records (no %s): run a search first"
                         % (log_dir, os.path.join(log_dir, records.TRIALS_FILE)))
    config = read_config(log_dir)
    space = make_space(config)
    out = os.path.join(log_dir, REPORT_DIR)
    os.makedirs(out, exist_ok=True)
    simulated = bool(config.search.benchmark)
    plot_progress(trials, os.path.join(out, "progress.png"), simulated)
    plot_tradeoffs(trials, config.constraints.bounds(), os.path.join(out, "tradeoffs.png"))
    state = records.RunState(trials)
    seconds = 60.0 * max(elapsed_minutes(trials, simulated).values())
    lines = ["# Search report: %s" % os.path.abspath(log_dir), "",
             "| setting | value |", "|---|---|",
             "| searcher | %s |" % config.search.searcher,
             "| search space | %s |" % space.name,
             "| latency source | %s |" % _latency_source(trials),
             "| objective | %s |" % critic.describe_objective(config.constraints), "",
             "```text", summary_text(config, space, state, seconds), "```", "",
             "![progress](progress.png)", "", "![accuracy vs cost](tradeoffs.png)", ""]
    if state.best is not None:
        lines += _best_section(space.from_dict(state.best["arch"]), state.best["index"], out)
    lines += _top_table(trials, top)
    lines += _pareto_section(trials, config)
    lines += _recipe_section(trials, space, top, out)
    lines += oneshot_report.section(log_dir, trials, out, _plt())
    lines += _deployed_section(log_dir)
    path = os.path.join(out, "report.md")
    records.atomic_write_text(path, "\n".join(lines))
    return path


def _deployed_section(log_dir: str) -> List[str]:
    """Where ``main.py --export_best`` put the retrained model, and its test accuracy.

    Reads ``log_dir/export_best.json`` (written by ``search.export_best``);
    no lines when there is none.
    """
    path = os.path.join(log_dir, "export_best.json")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        rec = json.load(f)
    onnx = ("ONNX checked with onnxruntime on %d test images, max |logit diff| %.1e"
            % (rec["onnx_images"], rec["onnx_max_abs_diff"]) if not rec["onnx_error"]
            else "no ONNX model: %s" % rec["onnx_error"])
    lines = ["## Deployed model", "",
             "The best candidate retrained for %d epochs on all chunks and exported to `%s`: "
             "test accuracy %.4f; %s." % (rec["epochs"], rec["folder"], rec["test_accuracy"],
                                         onnx), "",
             "| file | bytes |", "|---|---|"]
    lines += ["| `%s` | %d |" % (name, size) for name, size in sorted(rec["files"].items())]
    return lines + [""]


def read_config(log_dir: str) -> Config:
    """The run's Config from ``log_dir/config.json``; ValueError naming the file if unusable."""
    path = os.path.join(log_dir, records.CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return Config.from_dict(json.load(f))
    except FileNotFoundError:
        raise ValueError("%s not found: the folder holds no complete search" % path) from None
    except (OSError, ValueError, TypeError) as e:
        raise ValueError("%s is unreadable (%s)" % (path, e)) from None


def _best_section(candidate, index: int, out: str) -> List[str]:
    """The best candidate's section: its description, drawings of its cells (candidates
    with ``normal``/``reduction`` cells, i.e. of the cell space) and its JSON."""
    lines = ["## Best architecture: #%d" % index, "", "```text", candidate.describe(), "```", ""]
    arch = getattr(candidate, "arch", candidate)  # a RecipeCandidate's cells are its arch's
    for name in ("normal", "reduction"):
        cell = getattr(arch, name, None)
        if isinstance(cell, Cell):
            png = "best_%s_cell.png" % name
            draw_cell(cell, "best %s cell (#%d)" % (name, index), os.path.join(out, png))
            lines += ["![best %s cell](%s)" % (name, png), ""]
    text = (candidate.to_json().rstrip() if hasattr(candidate, "to_json")  # readable matrices
            else records.dumps(candidate.to_dict(), indent=2))
    return lines + ["```json", text, "```", ""]


def _ranked(trials: List[Dict], top: int) -> List[Dict]:
    """The ``top`` trained records by reward (ties: the earlier first)."""
    return sorted((t for t in trials if t["status"] == "ok" and _num(t["reward"]) is not None),
                  key=lambda t: (-t["reward"], t["index"]))[:top]


def _recipe_section(trials: List[Dict], space, top: int, out: str) -> List[str]:
    """With ``--search_space``: the decisions of the top candidates and, when scale
    decisions are searched, ``scale.png``; no lines for other spaces."""
    if not isinstance(space, RecipeSpace):
        return []
    names = [d.name for d in space.recipe]
    ranked = _ranked(trials, top)
    lines = ["## Recipes of the top %d candidates" % len(ranked), "",
             "| # | reward | val acc | latency ms | %s |" % " | ".join(names),
             "|---|---|---|---|%s" % ("---|" * len(names))]
    for t in ranked:
        values = t["arch"].get("recipe", {})
        lines.append("| %d | %s | %s | %s | %s |" % (
            t["index"], fmt_number(t["reward"]), fmt_number(t["metrics"].get("val_accuracy")),
            fmt_number(t["metrics"].get("latency_ms"), "%.3f"),
            " | ".join(str(values.get(n, "")) for n in names)))
    lines.append("")
    if any(n in SCALE_DECISIONS for n in names):
        plot_scale(trials, os.path.join(out, "scale.png"))
        lines += ["![accuracy vs latency by width_mult](scale.png)", ""]
    return lines


def plot_scale(trials: List[Dict], path: str):
    """Validation accuracy against latency of the trained candidates (one point per
    candidate), coloured by ``width_mult`` and shaped by ``depth`` (when decided)."""
    plt = _plt()
    seen = {}
    for t in trials:
        m = t["metrics"]
        if (t["status"] in ("ok", "duplicate") and _num(m.get("val_accuracy")) is not None
                and _num(m.get("latency_ms")) is not None):
            seen.setdefault(t["arch_hash"], t)
    recipes = {h: t["arch"].get("recipe", {}) for h, t in seen.items()}
    widths = sorted({r.get("width_mult") for r in recipes.values()}, key=str)
    depths = sorted({r.get("depth") for r in recipes.values()}, key=str)
    colors = plt.get_cmap("viridis")
    markers = "osD^vP*X"
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for h, t in seen.items():
        w, d = recipes[h].get("width_mult"), recipes[h].get("depth")
        ax.scatter([t["metrics"]["latency_ms"]], [t["metrics"]["val_accuracy"]], s=36,
                   color=colors(widths.index(w) / max(len(widths) - 1, 1)),
                   marker=markers[depths.index(d) % len(markers)], alpha=0.8)
    handles = [plt.Line2D([], [], marker="o", ls="", label="width_mult %s" % w,
                          color=colors(k / max(len(widths) - 1, 1)))
               for k, w in enumerate(widths)]
    handles += [plt.Line2D([], [], marker=markers[k % len(markers)], ls="", color="0.4",
                           label="depth %s" % d) for k, d in enumerate(depths)]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("trained candidates: accuracy against latency by scale", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _top_table(trials: List[Dict], top: int) -> List[str]:
    ranked = _ranked(trials, top)
    if not ranked:
        return []
    lines = ["## Top %d candidates" % len(ranked), "",
             "| # | reward | val acc | test acc | params | FLOPs | latency ms | memory MB "
             "| feasible |", "|---|---|---|---|---|---|---|---|---|"]
    for t in ranked:
        m = t["metrics"]
        lines.append("| %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            t["index"], fmt_number(t["reward"]), fmt_number(m.get("val_accuracy")),
            fmt_number(m.get("test_accuracy")), fmt_number(m.get("params"), "%d"),
            fmt_number(m.get("flops"), "%d"), fmt_number(m.get("latency_ms"), "%.3f"),
            fmt_number(m.get("memory_mb"), "%.2f"), "yes" if t["feasible"] else "no"))
    return lines + [""]


def _pareto_section(trials: List[Dict], config: Config) -> List[str]:
    """With ``--objective pareto``: the front of feasible trained candidates
    (``critic.pareto_front``), by cost; no lines otherwise."""
    if config.constraints.objective != "pareto":
        return []
    front = critic.pareto_front(trials, config.constraints)
    name = critic.cost_metric(config.constraints)
    lines = ["## Pareto front: validation accuracy against %s" % name, ""]
    if not front:
        return lines + ["No feasible trained candidate.", ""]
    lines += ["| # | val acc | %s | test acc |" % name, "|---|---|---|---|"]
    lines += ["| %d | %s | %s | %s |" % (t["index"], fmt_number(t["metrics"]["val_accuracy"]),
                                        fmt_number(t["metrics"][name], "%.6g"),
                                        fmt_number(t["metrics"].get("test_accuracy")))
              for t in front]
    return lines + [""]


def _latency_source(trials: List[Dict]) -> str:
    sources = sorted({str(t["metrics"].get("latency_source", "measured on the trainer device"))
                      for t in trials if "latency_ms" in t["metrics"]})
    return ", ".join(sources) if sources else "n/a"


def compare_main(args: Sequence[str]) -> int:
    """``... report --compare DIR DIR ... [--out FOLDER]``: several searches in one PNG and table.

    Returns:
      0, or 2 after one ``error:`` line for a folder that holds no search.
    """
    from autodl_design.search import compare
    try:
        path, lines = compare.write_compare(*compare.parse_args(args))
    except (ValueError, OSError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    print("\n".join(lines))
    print("comparison written: %s" % path)
    return 0


def main(argv=None) -> int:
    """``python -m autodl_design.search.report [--log_dir] LOG_DIR``: (re)writes the report.

    ``--compare DIR DIR ... [--out FOLDER]`` (first) compares searches instead
    (``autodl_design.search.compare``).
    """
    argv = list(sys.argv if argv is None else argv)
    if argv[1:2] == ["--compare"]:
        return compare_main(argv[2:])
    from absl import app
    import flags  # the project's flags; --log_dir names the search folder

    def run(args):
        if len(args) > 2:
            raise app.UsageError("one LOG_DIR at most, got %s" % " ".join(args[1:]))
        try:
            path = write_report(args[1] if len(args) == 2 else flags.FLAGS.log_dir)
        except (ValueError, OSError) as e:
            print("error: %s" % e, file=sys.stderr)
            return 2
        print("report written: %s" % path)
        return 0
    from autodl_design import cli
    return cli.run(run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
