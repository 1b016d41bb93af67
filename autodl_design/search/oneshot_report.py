"""The one-shot part of a search report: training curves and one-shot vs stand-alone ranking."""
import math
import os
from typing import Dict, List, Optional, Sequence

from autodl_design.search import oneshot_state


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    """Kendall's tau-b of paired values (ties counted as in tau-b); None if undefined.

    Args:
      xs, ys: equally long sequences of numbers.

    Returns:
      tau in [-1, 1], or None with fewer than 2 pairs or a constant side.
    """
    if len(xs) != len(ys):
        raise ValueError("kendall_tau needs pairs: %d x values, %d y values" % (len(xs), len(ys)))
    concordant = discordant = ties_x = ties_y = 0
    n = len(xs)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = xs[i] - xs[j], ys[i] - ys[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return None if denom == 0 else (concordant - discordant) / denom


def score_pairs(trials: List[Dict]) -> List[Dict]:
    """(index, one-shot score, one-shot val acc, stand-alone val acc) of the retrained records."""
    out = []
    for t in sorted(trials, key=lambda t: t["index"]):
        m = t["metrics"]
        if t["status"] == "ok" and isinstance(m.get("oneshot_score"), (int, float)):
            out.append({"index": t["index"], "oneshot_score": m["oneshot_score"],
                        "oneshot_val_accuracy": m["oneshot_val_accuracy"],
                        "val_accuracy": m["val_accuracy"],
                        "test_accuracy": m.get("test_accuracy")})
    return out


def plot_curves(history: List[Dict], path: str, plt) -> None:
    """Training loss and shared-weight validation accuracy per one-shot epoch (PNG)."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o")
    axes[0].set_ylabel("supernet training loss")
    axes[1].plot(epochs, [h["val_accuracy"] for h in history], marker="o", color="tab:green")
    axes[1].set_ylabel("validation accuracy (shared weights)")
    for ax in axes:
        ax.set_xlabel("one-shot epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def section(log_dir: str, trials: List[Dict], out: str, plt) -> List[str]:
    """Markdown lines of the one-shot section ([] for a multi-trial run); writes oneshot.png."""
    history = oneshot_state.read_history(log_dir)
    if not history:
        return []
    plot_curves(history, os.path.join(out, "oneshot.png"), plt)
    pairs = score_pairs(trials)
    tau = kendall_tau([p["oneshot_score"] for p in pairs], [p["val_accuracy"] for p in pairs])
    lines = ["## One-shot phase", "", "![one-shot training curves](oneshot.png)", "",
             "Kendall tau between one-shot score and stand-alone validation accuracy over "
             "the %d retrained candidates: %s" % (len(pairs), "undefined" if tau is None
                                                  else "%.3f" % tau), "",
             "| # | one-shot score | one-shot val acc | stand-alone val acc | test acc |",
             "|---|---|---|---|---|"]
    for p in pairs:
        lines.append("| %d | %.4f | %.4f | %.4f | %s |" % (
            p["index"], p["oneshot_score"], p["oneshot_val_accuracy"], p["val_accuracy"],
            "-" if p["test_accuracy"] is None else "%.4f" % p["test_accuracy"]))
    return lines + [""]
