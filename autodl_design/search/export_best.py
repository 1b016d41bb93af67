"""``main.py --export_best DIR``: retrain the search's best candidate on all chunks and export it.

After the search, the best feasible candidate (``log_dir/best.json``; with
``--search_space``, with its recipe: ``recipe.Recipe.apply``) is trained from
scratch for ``final_epochs`` on every chunk (the training chunks and the
validation chunk), its test accuracy is measured on the held-out test
split, and it is exported with ``trainer.deploy.export_all``: the Paddle
inference model, ONNX checked with onnxruntime, and the standalone
``model.py``. ``log_dir/export_best.json`` records where the files are, the
test accuracy and the checks.
"""
import dataclasses
import json
import os
from typing import Callable, Optional

import numpy as np

from autodl_design.config import Config

RECORD_FILE = "export_best.json"

@dataclasses.dataclass(frozen=True)
class FinalExport:
    """Where the best candidate goes and how long it is retrained."""
    folder: str
    final_epochs: int

    def check(self) -> Optional[str]:
        """A one-line problem with the target folder (checked before the search), or None."""
        if os.path.exists(self.folder) and (not os.path.isdir(self.folder)
                                            or os.listdir(self.folder)):
            return ("--export_best %s exists and is not an empty folder: give a new folder"
                    % self.folder)
        return None


def all_chunks(data):
    """``data`` with the validation chunk added to the training chunks (no validation split)."""
    empty = np.zeros((0,) + tuple(data.val_images.shape[1:]), np.float32)
    return dataclasses.replace(
        data, train_images=np.concatenate([data.train_images, data.val_images]),
        train_labels=np.concatenate([data.train_labels, data.val_labels]),
        val_images=empty, val_labels=np.zeros((0,), np.int64))


def run(final: FinalExport, config: Config, log: Callable[[str], None]) -> int:
    """Retrains and exports the best candidate of ``config``'s search; the exit code.

    Returns:
      0 when exported or when the search found no feasible candidate (said in
      one line), 1 when training or the export failed (one line saying why).
    """
    from autodl_design.recipe import split_candidate
    from trainer import deploy, onnx_export, single, train
    from autodl_design.devices import use_device
    best = os.path.join(config.search.log_dir, "best.json")
    if not os.path.isfile(best):
        log("export_best: no feasible candidate, nothing exported")
        return 0
    with open(best, encoding="utf-8") as f:
        best_record = json.load(f)
    arch, recipe = split_candidate(best_record["arch"])  # the recipe found, if searched
    _, data = single.load_data(config.data)
    trainer_config, data = single.scaled(config, recipe, all_chunks(data))  # at its resolution
    trainer_config = dataclasses.replace(trainer_config, early_stop=final.final_epochs)
    use_device(config.devices.trainer_devices[0])
    log("export_best: retraining the best candidate (%s) for %d epochs on all %d training "
        "images ..." % (best_record["arch_hash"][:12], final.final_epochs, len(data.train_images)))
    result, model = train.fit(arch, trainer_config, data, seed=config.search.seed)
    if result["status"] != "ok":
        log("export_best: retraining failed: %s" % result["reason"])
        return 1
    try:
        exported = deploy.export_all(model, arch, trainer_config, data, final.folder)
    except (RuntimeError, OSError, onnx_export.CheckError) as e:
        log("export_best: export to %s failed: %s" % (final.folder, " ".join(str(e).split())))
        return 1
    log("export_best: test accuracy %.4f after %d epochs (%.0f s)"
        % (result["test_accuracy"], result["epochs"], result["seconds"]))
    log("\n".join(deploy.describe(exported)))
    _record(config.search.log_dir, arch, final, result, exported)
    from autodl_design.search import report
    log("report: %s" % report.write_report(config.search.log_dir))
    return 0


def _record(log_dir: str, arch, final: FinalExport, result, exported) -> None:
    """Writes ``log_dir/export_best.json``: where the files are, test accuracy, the checks."""
    from autodl_design.records import atomic_write_text
    atomic_write_text(os.path.join(log_dir, RECORD_FILE), json.dumps({
        "folder": exported.folder, "arch_hash": arch.hash(), "epochs": int(result["epochs"]),
        "test_accuracy": float(result["test_accuracy"]), "files": dict(exported.files),
        "reload_max_abs_diff": exported.reload_diff, "onnx_max_abs_diff": exported.onnx_diff,
        "onnx_images": exported.onnx_images, "onnx_error": exported.onnx_error,
        "final_epochs": final.final_epochs}, indent=1) + "\n")
