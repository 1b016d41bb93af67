"""One architecture end to end: load it and the data, measure, train, report, export.

The library behind ``python -m trainer`` (``trainer/__main__.py`` only reads
the flags and maps the exceptions below to exit codes).
"""
import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from autodl_design.arch import Architecture
from autodl_design.config import Config, DataConfig, TrainerConfig
from autodl_design.recipe import Recipe, SearchSpaceError, check_value


class Failed(Exception):
    """Training or the export failed (``python -m trainer`` exits 1)."""


class BadInput(Exception):
    """The recipe's scale does not fit the data or the latency table (exit 2, one line)."""


def load_arch(path: str, export: str) -> Architecture:
    """The architecture in ``path``, after checking that ``export`` ("" = none) is usable.

    Raises:
      ValueError: the file is not a valid architecture, or ``export`` exists
        and is not an empty folder.
    """
    arch = Architecture.load(path)
    if export and os.path.exists(export) and (
            not os.path.isdir(export) or os.listdir(export)):
        raise ValueError("--export %s exists and is not an empty folder: give a new folder"
                         % export)
    return arch


def load_candidate(path: str, export: str, overrides: Optional[Dict[str, Any]] = None
                   ) -> Tuple[Architecture, Recipe]:
    """(architecture, recipe) of an architecture file, a candidate or a record (best.json).

    The recipe is the file's ``"recipe"`` object (beside the cells, or in the
    record's ``"arch"``; none = the trainer's settings), with ``overrides``
    (e.g. ``{"width_mult": 0.5}`` from ``--width_mult``) replacing or adding
    decisions.

    Raises:
      ValueError: the file is not a valid architecture, ``export`` is not
        usable (``load_arch``), or the recipe has an unknown decision or a
        bad value (``SearchSpaceError``, naming the file or the value).
    """
    arch = load_arch(path, export)
    with open(path) as f:
        d = json.load(f)  # readable: load_arch read it
    if isinstance(d, dict) and "arch" in d and "normal" not in d:
        d = d["arch"]
    try:
        recipe = Recipe.from_dict(d.get("recipe", {}))
    except SearchSpaceError as e:
        raise SearchSpaceError("%s: %s" % (path, e)) from None
    values = recipe.to_dict()
    for name, v in (overrides or {}).items():
        if v is not None:
            try:
                values[name] = check_value(name, v)
            except SearchSpaceError as e:
                raise SearchSpaceError("--%s %s: %s" % (name, v, e)) from None
    return arch, Recipe.from_dict(values)


def scaled(config: Config, recipe: Recipe, data) -> Tuple[TrainerConfig, Any]:
    """(trainer settings of ``recipe``, ``data`` at its resolution).

    Raises:
      SearchSpaceError: the resolution is below 8 or larger than the images.
    """
    from trainer.data import at_resolution
    trainer_config = recipe.apply(config.trainer)
    return trainer_config, at_resolution(data, trainer_config)


def predict_from_table(arch: Architecture, trainer_config: TrainerConfig, data,
                       table_path: str) -> Dict:
    """Latency and memory of the network predicted by the latency table ``table_path``.

    Raises:
      ValueError: the table cannot be read, was made for other settings, or
        lacks this network's scale or a block (naming it).
    """
    from trainer.latency_table import LatencyTable
    return LatencyTable.load(table_path).predict(arch, trainer_config, data.image_shape,
                                                 data.num_classes)


def load_data(data_config: DataConfig):
    """(path, dataset): ``data_config.data_path``, or the embedded default prepared on first use.

    Raises:
      trainer.data.DatasetError, OSError: the dataset cannot be prepared or read.
    """
    from trainer import data as data_lib
    path = data_config.data_path or data_lib.ensure_default_dataset(
        data_config.images_per_class)
    return path, data_lib.load_dataset(path)


def format_table(rows: Sequence[Tuple[str, str]]) -> str:
    """Two aligned columns, one ``name  value`` row per line."""
    width = max(len(k) for k, _ in rows)
    return "\n".join("%-*s  %s" % (width, k, v) for k, v in rows)


def result_rows(hw: Dict, result: Dict, device: str) -> List[Tuple[str, str]]:
    """The final table: accuracies, loss, epochs, params, FLOPs, latency, memory, speed."""
    return [("val accuracy", "%.4f" % result["val_accuracy"]),
            ("test accuracy", "%.4f" % result["test_accuracy"]),
            ("train loss", "%.4f" % result["train_loss"]),
            ("epochs", "%d" % result["epochs"]),
            ("params", "%s (%s trainable)" % (format(hw["params"], ","),
                                             format(hw["trainable_params"], ","))),
            ("FLOPs (multiply-adds)", "%s per image" % format(hw["flops"], ",")),
            ("latency", "%.2f ms median, %.2f ms p90 (batch %d, %s)"
             % (hw["latency_ms"], hw["latency_p90_ms"], hw["latency_batch"], device)),
            ("peak memory", "%.2f MB (%s)" % (hw["memory_mb"], hw["memory_source"])),
            ("training speed", "%.0f images/s" % result["images_per_second"]),
            ("wall time", "%.1f s" % result["seconds"])]


def train_one(arch: Architecture, arch_path: str, config: Config, trainer_config: TrainerConfig,
              data, data_path: str, seed: int, out: Callable[[str], None] = print):
    """Prints the outline, measures the hardware metrics and trains.

    Returns:
      (hardware metrics, training result, trained model, device).

    Raises:
      Failed: training failed (NaN/inf, out of memory, a Paddle error of the
        candidate's network).
    """
    from trainer import metrics, network, train
    from autodl_design.devices import use_device
    device = use_device(config.devices.trainer_devices[0])
    image_shape = tuple(data.image_shape)
    out("Architecture %s (%s):\n%s" % (arch_path, arch.hash()[:12], arch.describe()))
    out("\nNetwork (%s preset, ratio %d):\n%s" % (
        config.search.preset, trainer_config.ratio,
        network.summary(arch, trainer_config, image_shape, data.num_classes)))
    out("\nData: %s: %d train, %d val, %d test images, %d classes, augment %s"
        % (data_path, len(data.train_images), len(data.val_images), len(data.test_images),
           data.num_classes, data.augment))
    hw = metrics.measure_hardware(arch, trainer_config, image_shape, data.num_classes,
                                  seed=seed)
    out("Params %s, FLOPs %s per image. Training %d epochs on %s ..."
        % (format(hw["params"], ","), format(hw["flops"], ","), trainer_config.early_stop,
           device))

    def on_epoch(epoch, val):
        out("  epoch %d/%d: val accuracy %.4f" % (epoch, trainer_config.early_stop, val))
        return True

    result, model = train.fit(arch, trainer_config, data, seed=seed, on_epoch=on_epoch)
    if result["status"] != "ok":
        raise Failed("training failed: %s" % result["reason"])
    return hw, result, model, device


def export(model, arch: Architecture, trainer_config: TrainerConfig, data, folder: str,
           out: Callable[[str], None] = print):
    """Exports the trained model to ``folder``: Paddle inference model, model.py, ONNX.

    Prints the files, their sizes and the checks (``trainer.deploy``). A model
    paddle2onnx cannot convert gets one line naming the op; the rest stands.

    Returns:
      The ``trainer.deploy.ExportResult``.

    Raises:
      Failed: the Paddle export or a check failed.
    """
    from trainer import deploy, onnx_export
    try:
        result = deploy.export_all(model, arch, trainer_config, data, folder)
    except (RuntimeError, OSError, onnx_export.CheckError) as e:
        raise Failed("export to %s failed: %s" % (folder, e)) from e
    out("\n" + "\n".join(deploy.describe(result)))
    return result


def run(arch: Architecture, arch_path: str, config: Config, data, data_path: str, *,
        seed: int, epochs: Optional[int] = None, export_to: str = "",
        out: Callable[[str], None] = print, recipe: Recipe = Recipe()):
    """Measures, trains (``epochs``, default ``early_stop``), prints the table, exports.

    Args:
      recipe: the candidate's recipe (``load_candidate``): the network is
        built, measured and trained at its scale, with its training settings
        (``Recipe.apply``), on the images resized to its resolution. With
        ``config.trainer.latency_table`` the table's predicted latency and
        memory are printed too.

    Raises:
      BadInput: the recipe's resolution does not fit the images, or the
        latency table cannot predict this network (naming the missing scale
        or block); raised before training.
      Failed: training or the export failed.
    """
    try:
        trainer_config, data = scaled(config, recipe, data)
    except SearchSpaceError as e:
        raise BadInput(str(e)) from None
    if epochs is not None:
        trainer_config = dataclasses.replace(trainer_config, early_stop=epochs)
    predicted = None
    if config.trainer.latency_table:
        try:
            predicted = predict_from_table(arch, trainer_config, data,
                                           config.trainer.latency_table)
        except ValueError as e:  # unreadable, other settings, a missing scale or block
            raise BadInput(str(e)) from None
    if recipe.values:
        out("Recipe: %s" % ", ".join("%s=%s" % kv for kv in recipe.values))
    hw, result, model, device = train_one(arch, arch_path, config, trainer_config, data,
                                          data_path, seed, out)
    rows = result_rows(hw, result, device)
    if predicted is not None:
        rows.append(("predicted latency", "%.2f ms, memory %.2f MB (%s)" % (
            predicted["latency_ms"], predicted["memory_mb"], predicted["latency_source"])))
    out("\n" + format_table(rows))
    if export_to:
        export(model, arch, trainer_config, data, export_to, out)
