"""The real trainer behind the search's workers: ``TrainerEvaluator``, set up once per worker.

``autodl_design.search.local_pool`` (local processes) and
``autodl_design.search.ray_pool`` (Ray actors) receive a ``TrainerEvaluator``
(an ``autodl_design.interfaces.Evaluator``), call ``setup`` once in the
worker and ``evaluate`` per candidate; ``tests/fake_trainer.py`` has a cheap
``FakeEvaluator`` with the same interface.
"""
import dataclasses
from typing import Any, Dict, Optional, Sequence

import numpy as np

from autodl_design import critic, evaluation
from autodl_design.arch import Architecture, Cell
from autodl_design.config import Config, TrainerConfig
from autodl_design.evaluation import WorkerSetupError
from autodl_design.interfaces import Decision
from autodl_design.recipe import (SCALE_DECISIONS, Recipe, SearchSpaceError, check_resolutions,
                                  split_candidate)


@dataclasses.dataclass
class TrainerEvaluator:
    """Trains candidates with Paddle on a dataset folder (picklable until ``setup``).

    Attributes:
      data_path: the dataset folder (the Ray pool ships it to each actor and
        replaces this field with the actor's copy).
      config_dict: the run's ``Config.to_dict()``.
    """
    data_path: str
    config_dict: Dict
    _context: Optional[Dict[str, Any]] = dataclasses.field(default=None, init=False,
                                                           repr=False, compare=False)

    def setup(self, device: str, threads: int) -> None:
        """Pins this process to ``device`` and ``threads`` and loads the dataset once.

        Raises:
          WorkerSetupError: the device is absent, the data folder or the
            latency table cannot be read (one line).
        """
        from autodl_design.backend import paddle
        from autodl_design.devices import use_device
        from trainer.data import DatasetError, load_dataset
        paddle.base.core.set_num_threads(int(threads))
        try:
            use_device(device)
        except RuntimeError as e:  # the device asked for is not there
            raise WorkerSetupError(str(e)) from None
        config = Config.from_dict(self.config_dict)
        try:
            context = {"config": config, "data": load_dataset(self.data_path),
                       "device": device}
        except DatasetError as e:
            raise WorkerSetupError(str(e)) from None
        if config.trainer.latency_table:
            from trainer.latency_table import LatencyTable
            try:
                context["latency_table"] = LatencyTable.load(config.trainer.latency_table)
            except (OSError, ValueError) as e:
                raise WorkerSetupError("latency table %s: %s"
                                       % (config.trainer.latency_table, e)) from None
        self._context = context

    def evaluate(self, candidate: Dict, index: int, seed: int, options: Dict) -> Dict:
        """Cheap metrics, the bounds, then (if worth it) training (``evaluate_candidate``).

        Out of memory makes the candidate infeasible ("out of memory on
        gpu:N ..."); after any failure the GPU allocator's cache is emptied.

        Raises:
          autodl_design.evaluation.DeviceFault: a CUDA or cuDNN error (the
            worker reports it and exits; the pool starts a fresh one).
        """
        from autodl_design.devices import device_label
        device = self._context["device"]
        metrics = evaluate_candidate(candidate, index, seed, self._context, options)
        return evaluation.device_failures(metrics, device_label(device),
                                          lambda: empty_cache(device))


def empty_cache(device: str) -> None:
    """Returns the GPU allocator's cached blocks after a failure (nothing to do on CPU)."""
    if device.startswith("gpu"):
        from autodl_design.backend import paddle
        paddle.device.cuda.empty_cache()


def evaluate_candidate(arch_dict: Dict, index: int, seed: int, context: Dict,
                       options: Dict) -> Dict:
    """Cheap metrics, the constraint check, then (if worth it) training.

    The candidate is read with ``autodl_design.recipe.split_candidate``: its
    recipe (none for a cell-only search) gives the trainer settings
    (``Recipe.apply(config.trainer)``: width, cells per stage, resolution,
    learning rate, weight decay, optimizer, batch size, gradient clip,
    dropout), so the cheap metrics before training (params, FLOPs, latency,
    memory) and the training are at the candidate's own scale and recipe.

    Args:
      arch_dict: the candidate's JSON form (``Architecture.to_dict()``, plus
        ``"recipe"`` in a search over a search-space file).
      index: its evaluation index.
      seed: the training seed.
      context: what ``TrainerEvaluator.setup`` loaded: config, data, device
        and optionally latency_table.
      options: ``options["cull"]`` (per-epoch thresholds) with
        ``options["cull_start_epoch"]`` turns on the median stopping rule;
        ``epochs``, ``save_state`` and ``continue_from`` (a scheduler's rung)
        train part of the schedule (``trainer.continuation``).

    Returns:
      The metrics (see ``autodl_design.evaluation.evaluate_candidate``; a
      recipe candidate's also have ``trainer_settings``, see ``effective_settings``); a
      candidate too large for memory is status 'failed' with a reason naming
      MemoryError (``TrainerEvaluator.evaluate`` makes it infeasible), a
      CUDA/cuDNN error while measuring is 'failed' naming it (``evaluate``
      raises ``DeviceFault``). Other exceptions are bugs and propagate.
    """
    from trainer.continuation import Continuation
    from trainer.train import train_and_evaluate
    config: Config = context["config"]
    data = context["data"]
    arch, recipe = split_candidate(arch_dict)
    trainer_config = recipe.apply(config.trainer)

    table = context.get("latency_table")

    def measure(a):
        from autodl_design.devices import device_label, measuring
        with measuring(context["device"]):  # one worker at a time per GPU
            return hardware_metrics(a, trainer_config, data.image_shape, data.num_classes,
                                    table, device_label(context["device"]))

    on_epoch = None
    if "cull" in options:
        on_epoch = evaluation.median_stopper(options["cull"], options["cull_start_epoch"])

    def train(a):
        return train_and_evaluate(a, trainer_config, data, seed=seed, on_epoch=on_epoch,
                                  amp=trainer_config.amp and context["device"] != "cpu",
                                  continuation=Continuation.from_options(options))

    try:
        metrics = evaluation.evaluate_candidate(arch, config.constraints, measure, train)
        if recipe.values:
            metrics["trainer_settings"] = effective_settings(trainer_config, data.image_shape)
        return metrics
    except MemoryError as e:  # the candidate's network does not fit (e.g. measuring latency)
        return {"status": "failed", "reason": "MemoryError: %s" % " ".join(str(e).split())}
    except (OSError, SystemError) as e:  # Paddle's External/Fatal errors while measuring
        if evaluation.failure_kind(str(e)) != "device":
            raise
        return {"status": "failed", "reason": "%s: %s" % (type(e).__name__,
                                                          " ".join(str(e).split())[:600])}


def effective_settings(trainer_config: TrainerConfig, image_shape) -> Dict[str, Any]:
    """The trainer settings a recipe candidate ran with (its record's ``trainer_settings``).

    ``resolution`` is the input side actually used (the images' own when the
    recipe has none).
    """
    from trainer.walk import input_shape
    keys = ("width", "num_cells", "lr_max", "weight_decay", "optimizer", "train_batch_size",
            "grad_clip", "dropout")
    out = {k: getattr(trainer_config, k) for k in keys}
    out["resolution"] = int(input_shape(trainer_config, image_shape)[1])
    return out


def hardware_metrics(arch: Architecture, trainer_config: TrainerConfig, image_shape,
                     num_classes: int, table=None, device: str = "cpu") -> Dict:
    """The critic's metrics: measured here, or latency/memory predicted by a latency table.

    Args:
      table: a ``trainer.latency_table.LatencyTable`` or None.
      device: the worker's device, named in ``latency_source`` when measured.

    Returns:
      dict: params, trainable_params, flops (``metrics.count``), latency_ms,
      memory_mb, memory_source, latency_batch, latency_source ('table:<file>
      (<device>)' or 'measured on <device>'); measured metrics also have
      latency_p90_ms.
    """
    from trainer import metrics
    if table is None:
        hw = metrics.measure_hardware(arch, trainer_config, image_shape, num_classes)
        hw["latency_source"] = "measured on %s" % device
        return hw
    counts = metrics.count(arch, trainer_config, image_shape, num_classes)
    out = {k: int(counts[k]) for k in ("params", "trainable_params", "flops")}
    out.update(table.predict(arch, trainer_config, image_shape, num_classes))
    return out


def smallest_scale(trainer_config: TrainerConfig, decisions: Sequence[Decision] = ()
                   ) -> TrainerConfig:
    """``trainer_config`` at the smallest width_mult, depth and resolution of ``decisions``.

    Params grow with width and depth, FLOPs with those and the resolution, so
    no scale of the space has fewer of either.
    """
    small = tuple((d.name, min(d.choices)) for d in decisions if d.name in SCALE_DECISIONS)
    return Recipe(small).apply(trainer_config)


def smallest_counts(config: Config, image_shape, num_classes: int,
                    decisions: Sequence[Decision] = ()) -> Dict[str, float]:
    """Params and FLOPs of the cheapest network the search space can produce.

    Every cell has at least one source node (a 1x1 compression) and one output
    node, and every node runs an op: a chain of the cheapest op has exactly
    one of each, so no architecture has fewer parameters or FLOPs. With a
    search-space file's ``decisions``, at its smallest scale (``smallest_scale``).
    """
    from trainer.metrics import count
    trainer_config = smallest_scale(config.trainer, decisions)
    n = config.agent.num_nodes
    chain = np.eye(n, k=1, dtype=np.int8)
    best = {"params": float("inf"), "flops": float("inf")}
    for op in config.agent.ops:
        cell = Cell([op] * n, chain)
        c = count(Architecture(cell, cell), trainer_config, image_shape, num_classes)
        best = {k: min(best[k], float(c[k])) for k in best}
    return best


def unsatisfiable(config: Config, manifest: Dict,
                  decisions: Sequence[Decision] = ()) -> Optional[str]:
    """A one-line message if the search cannot run as configured, else None.

    Problems: a params/FLOPs bound below every architecture; with
    ``config.trainer.latency_table``, a table that cannot be read, was made
    for other network settings, or lacks a block of the search space. With a
    search-space file's ``decisions`` (``recipe.parse_decisions``): a
    resolution larger than the images, and the table must cover every scale.
    """
    h, w, c = manifest["image_shape_hwc"]
    try:
        check_resolutions(decisions, min(h, w))
    except SearchSpaceError as e:
        return str(e)
    if config.trainer.latency_table:
        from trainer.latency_table import LatencyTable
        try:
            LatencyTable.load(config.trainer.latency_table).check_space(
                config.trainer, config.agent.ops, config.agent.num_nodes, (c, h, w),
                len(manifest["class_names"]), decisions)
        except ValueError as e:
            return " ".join(str(e).split())
    lower = smallest_counts(config, (c, h, w), len(manifest["class_names"]), decisions)
    problem = critic.check_satisfiable(config.constraints, lower)
    if problem:
        return problem + " (--width/--num_stages/--num_cells/--ratio)"
    return None
