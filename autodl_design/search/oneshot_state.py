"""Files of the one-shot phase in ``log_dir/oneshot/``: checkpoints, curves, the top candidates.

* ``epoch_NNNN/``: the checkpoint after epoch NNNN (supernet weights, its
  optimizer, the controller or the architecture parameters and their
  optimizer, ``state.json``); written completely under a temporary name,
  renamed, then named by ``latest.json`` (replaced atomically, with the
  sha256 of every file); older epochs are removed after that. A SIGKILL at
  any moment leaves ``latest.json`` naming a complete checkpoint (or none).
* ``history.json``: one entry per epoch (the curves of the report).
* ``topk.json``: the candidates to retrain with their one-shot scores; its
  presence means the one-shot phase is done.
"""
import json
import os
import shutil
import tempfile
from typing import Callable, Dict, List, Optional

from autodl_design import records
from autodl_design.search.errors import SearchError

ONESHOT_DIR = "oneshot"
LATEST_FILE = "latest.json"
HISTORY_FILE = "history.json"
TOPK_FILE = "topk.json"


def folder(log_dir: str) -> str:
    return os.path.join(log_dir, ONESHOT_DIR)


def _files(root: str) -> List[str]:
    out = []
    for base, _, names in os.walk(root):
        out += [os.path.relpath(os.path.join(base, n), root) for n in names]
    return sorted(out)


def save_checkpoint(log_dir: str, epoch: int, write: Callable[[str], None]) -> str:
    """Writes the checkpoint of ``epoch``: ``write(tmp_folder)`` fills it; returns its folder."""
    root = folder(log_dir)
    os.makedirs(root, exist_ok=True)
    name = "epoch_%04d" % epoch
    tmp = tempfile.mkdtemp(prefix=".%s.tmp-" % name, dir=root)
    try:
        write(tmp)
        sums = {f: records.sha256_file(os.path.join(tmp, f)) for f in _files(tmp)}
        final = os.path.join(root, name)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    records.atomic_write_json(os.path.join(root, LATEST_FILE),
                              {"epoch": epoch, "folder": name, "sha256": sums})
    for old in os.listdir(root):
        if old != name and old.startswith(("epoch_", ".epoch_")):
            shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return final


def _damaged(path: str, why: str) -> SearchError:
    return SearchError("--resume: the supernet checkpoint %s is damaged (%s); delete %s to "
                       "restart the one-shot phase" % (path, why, path))


def latest_checkpoint(log_dir: str) -> Optional[Dict]:
    """``{"epoch", "folder"}`` of the last complete checkpoint, verified; None if there is none.

    Raises:
      SearchError: latest.json or a file it names is unreadable or changed.
    """
    root = folder(log_dir)
    path = os.path.join(root, LATEST_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            latest = json.load(f)
        ckpt = os.path.join(root, latest["folder"])
        sums = latest["sha256"]
        epoch = int(latest["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _damaged(root, "%s unreadable: %s" % (LATEST_FILE, e)) from None
    if not sums:
        raise _damaged(root, "%s lists no files" % LATEST_FILE)
    for name, digest in sums.items():
        f = os.path.join(ckpt, name)
        if not os.path.isfile(f):
            raise _damaged(root, "%s is missing" % f)
        if records.sha256_file(f) != digest:
            raise _damaged(root, "%s does not match its checksum" % f)
    return {"epoch": epoch, "folder": ckpt}


def write_history(log_dir: str, history: List[Dict]) -> None:
    records.atomic_write_json(os.path.join(folder(log_dir), HISTORY_FILE), history)


def read_history(log_dir: str) -> List[Dict]:
    """The per-epoch curves, [] when the run has no one-shot phase."""
    path = os.path.join(folder(log_dir), HISTORY_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def write_topk(log_dir: str, method: str, candidates: List[Dict]) -> None:
    records.atomic_write_json(os.path.join(folder(log_dir), TOPK_FILE),
                              {"method": method, "candidates": candidates})


def read_topk(log_dir: str) -> Optional[Dict]:
    """The saved top candidates, or None while the one-shot phase is not done.

    Raises:
      SearchError: the file is damaged.
    """
    path = os.path.join(folder(log_dir), TOPK_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            d = json.load(f)
        return {"method": d["method"], "candidates": list(d["candidates"])}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SearchError("--resume: %s is damaged (%s); delete %s to restart the one-shot "
                          "phase" % (path, e, folder(log_dir))) from None


def clear(log_dir: str) -> None:
    """Removes the one-shot files of an earlier run (a new run in the same log_dir)."""
    shutil.rmtree(folder(log_dir), ignore_errors=True)
