"""Saving and restoring a candidate's training mid-schedule, for epoch-budget schedulers.

A scheduler (``autodl_design.search.schedulers``) trains a candidate for a
few epochs, then maybe promotes it to more: the evaluator's options
``epochs`` (train up to this epoch of the ``early_stop``-epoch schedule),
``save_state`` (where to save the state afterwards) and ``continue_from``
(the state to continue from) become a ``Continuation``. A state file holds
the weights (BatchNorm statistics included), the optimizer's accumulators,
the epoch and step reached (the cosine learning rate continues where it
was), the numpy generator of shuffling and augmentation, and the validation
history. It is written to a temp file and renamed (atomic). With Ray, the
path is in the driver's log folder: the actors must share its file system.

Not saved: Paddle's global random state (used only by dropout, off by
default) and the AMP loss scaler (GPU only); a continued run then differs
from an uninterrupted one in those random draws and the scale only.
"""
import dataclasses
import os
import tempfile
from typing import Any, Dict, Optional, Tuple

import numpy as np

from autodl_design.backend import paddle


@dataclasses.dataclass(frozen=True)
class Continuation:
    """One rung of a candidate's training.

    Attributes:
      epochs: train up to this epoch (of the whole ``early_stop`` schedule).
      save_state: path to save the state after training ("" = do not).
      continue_from: path of the state to continue from ("" = from scratch).
    """
    epochs: int
    save_state: str = ""
    continue_from: str = ""

    @classmethod
    def from_options(cls, options: Dict) -> Optional["Continuation"]:
        """The continuation a scheduler's evaluator options ask for; None without ``epochs``."""
        if "epochs" not in options:
            return None
        return cls(int(options["epochs"]), options.get("save_state", ""),
                   options.get("continue_from", ""))


def _renamed(state: Dict[str, Any], names: Dict[str, str]) -> Dict[str, Any]:
    """Optimizer state with every key's parameter-name prefix replaced through ``names``.

    Accumulators are keyed by the parameter's unique name plus a suffix
    (``conv2d_3.w_0_velocity_0``); unique names depend on how many layers
    the process built before, so they are saved under the structured name
    (``stem.0.weight``) and mapped back on loading.
    """
    out = {}
    prefixes = sorted(names, key=len, reverse=True)
    for key, value in state.items():
        match = next((p for p in prefixes if key.startswith(p + "_")), None)
        out[key if match is None else names[match] + key[len(match):]] = value
    return out


def save_state(path: str, model, optimizer, epoch: int, step: int,
               rng: np.random.Generator, val_history) -> None:
    """Writes the training state of ``model`` and ``optimizer`` to ``path`` atomically."""
    to_structured = {p.name: n for n, p in model.named_parameters()}
    state = {"model": model.state_dict(),
             "optimizer": _renamed(optimizer.state_dict(), to_structured),
             "epoch": int(epoch), "step": int(step), "rng": rng.bit_generator.state,
             "val_history": list(val_history)}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=folder)
    os.close(fd)
    try:
        paddle.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_state(path: str, model, optimizer, rng: np.random.Generator) -> Tuple[int, int, list]:
    """Restores ``model``, ``optimizer`` and ``rng`` from ``path``.

    Returns:
      (epoch reached, optimizer steps done, validation history).
    """
    state = paddle.load(path)
    model.set_state_dict(state["model"])
    to_unique = {n: p.name for n, p in model.named_parameters()}
    optimizer.set_state_dict(_renamed(state["optimizer"], to_unique))
    rng.bit_generator.state = state["rng"]
    return int(state["epoch"]), int(state["step"]), list(state["val_history"])
