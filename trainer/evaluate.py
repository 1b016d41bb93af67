"""The real trainer behind the search's workers: set up once per worker, evaluate candidates.

``autodl_design.workers`` (local processes) and ``autodl_design.ray_pool``
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
    from agent.parl_backend import paddle
    from trainer.data import load_dataset
    from trainer.devices import use_device
    paddle.base.core.set_num_threads(int(threads))
    use_device(device)
    return {"config": Config.from_dict(config_dict), "data": load_dataset(data_path),
            "device": device}


def evaluate_candidate(arch_dict: Dict, index: int, seed: int, context: Dict,
                       options: Dict) -> Dict:
    """Cheap metrics, the constraint check, then (if worth it) training.

    ``options["cull"]`` (per-epoch thresholds) with ``options["cull_start_epoch"]``
    turns on the median stopping rule for this candidate.
    """
    from trainer.metrics import measure_hardware
    from trainer.train import train_and_evaluate
    config: Config = context["config"]
    data = context["data"]
    arch = Architecture.from_dict(arch_dict)

    def measure(a):
        return measure_hardware(a, config.trainer, data.image_shape, data.num_classes)

    on_epoch = None
    if "cull" in options:
        on_epoch = evaluation.median_stopper(options["cull"], options["cull_start_epoch"])

    def train(a):
        return train_and_evaluate(a, config.trainer, data, seed=seed, on_epoch=on_epoch)

    return evaluation.evaluate_candidate(arch, config.constraints, measure, train)


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
    """A one-line message if a params/FLOPs bound is below every architecture, else None."""
    h, w, c = manifest["image_shape_hwc"]
    lower = smallest_counts(config, (c, h, w), len(manifest["class_names"]))
    problem = critic.check_satisfiable(config.constraints, lower)
    if problem:
        return problem + " (--width/--num_stages/--num_cells/--ratio)"
    return None
