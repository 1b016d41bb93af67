"""The real trainer behind the search's workers: set up once per worker, evaluate candidates.

``autodl_design.search.local_pool`` (local processes) and ``autodl_design.search.ray_pool``
(Ray actors) call ``setup_worker`` once and ``evaluate_candidate`` per
candidate; ``tests/fake_trainer.py`` has the same two functions.
"""
from typing import Dict, Optional

import numpy as np

from autodl_design import critic, evaluation
from autodl_design.arch import Architecture, Cell
from autodl_design.config import Config, TrainerConfig


def setup_worker(device: str, threads: int, data_path: str, config_dict: Dict, **unused) -> Dict:
    """Pins this process to ``device`` and ``threads`` and loads the dataset once."""
    from autodl_design.backend import paddle
    from trainer.data import load_dataset
    from autodl_design.devices import use_device
    paddle.base.core.set_num_threads(int(threads))
    use_device(device)
    config = Config.from_dict(config_dict)
    context = {"config": config, "data": load_dataset(data_path), "device": device}
    if config.trainer.latency_table:
        from trainer.latency_table import LatencyTable
        context["latency_table"] = LatencyTable.load(config.trainer.latency_table)
    return context


def evaluate_candidate(arch_dict: Dict, index: int, seed: int, context: Dict,
                       options: Dict) -> Dict:
    """Cheap metrics, the constraint check, then (if worth it) training.

    ``options["cull"]`` (per-epoch thresholds) with ``options["cull_start_epoch"]``
    turns on the median stopping rule for this candidate.
    """
    from trainer.train import train_and_evaluate
    config: Config = context["config"]
    data = context["data"]
    arch = Architecture.from_dict(arch_dict)

    table = context.get("latency_table")

    def measure(a):
        return hardware_metrics(a, config.trainer, data.image_shape, data.num_classes,
                                table, context["device"])

    on_epoch = None
    if "cull" in options:
        on_epoch = evaluation.median_stopper(options["cull"], options["cull_start_epoch"])

    def train(a):
        return train_and_evaluate(a, config.trainer, data, seed=seed, on_epoch=on_epoch)

    return evaluation.evaluate_candidate(arch, config.constraints, measure, train)


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


def smallest_counts(config: Config, image_shape, num_classes: int) -> Dict[str, float]:
    """Params and FLOPs of the cheapest network the search space can produce.

    Every cell has at least one source node (a 1x1 compression) and one output
    node, and every node runs an op: a chain of the cheapest op has exactly
    one of each, so no architecture has fewer parameters or FLOPs.
    """
    from trainer.metrics import count
    n = config.agent.num_nodes
    chain = np.eye(n, k=1, dtype=np.int8)
    best = {"params": float("inf"), "flops": float("inf")}
    for op in config.agent.ops:
        cell = Cell([op] * n, chain)
        c = count(Architecture(cell, cell), config.trainer, image_shape, num_classes)
        best = {k: min(best[k], float(c[k])) for k in best}
    return best


def unsatisfiable(config: Config, manifest: Dict) -> Optional[str]:
    """A one-line message if the search cannot run as configured, else None.

    Problems: a params/FLOPs bound below every architecture; with
    ``config.trainer.latency_table``, a table that cannot be read, was made
    for other network settings, or lacks a block of the search space.
    """
    h, w, c = manifest["image_shape_hwc"]
    if config.trainer.latency_table:
        from trainer.latency_table import LatencyTable
        try:
            LatencyTable.load(config.trainer.latency_table).check_space(
                config.trainer, config.agent.ops, config.agent.num_nodes, (c, h, w),
                len(manifest["class_names"]))
        except ValueError as e:
            return " ".join(str(e).split())
    lower = smallest_counts(config, (c, h, w), len(manifest["class_names"]))
    problem = critic.check_satisfiable(config.constraints, lower)
    if problem:
        return problem + " (--width/--num_stages/--num_cells/--ratio)"
    return None
