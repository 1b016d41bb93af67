"""Builds the pool of workers a configuration asks for: local processes or Ray actors."""
import os
from typing import Callable

from autodl_design.config import Config
from autodl_design.devices import worker_threads
from autodl_design.interfaces import Evaluator, Pool
from autodl_design.search.errors import SearchError


def make_pool(config: Config, evaluator: Evaluator, log: Callable[[str], None]) -> Pool:
    """The pool ``config.devices`` asks for, running ``evaluator`` (not started).

    Local workers get their threads by device kind (``devices.worker_threads``);
    Ray puts GPU actors (``gpus_per_trainer`` each, fractions allowed) on the
    nodes with GPUs and CPU actors on the others.

    Raises:
      SearchError: --cluster ray without Ray installed.
      ValueError: a GPU index beyond ``CUDA_VISIBLE_DEVICES`` (one line).
    """
    d = config.devices
    if d.cluster == "ray":
        try:
            from autodl_design.search.ray_pool import RayPool
            import ray  # noqa: F401
        except ImportError:
            raise SearchError("--cluster ray needs Ray: run WITH_RAY=1 bash setup.sh") from None
        return RayPool(d.ray_address, d.num_trainers, d.cpus_per_trainer, use_gpus=True,
                       max_retries=d.max_retries, trial_timeout=d.trial_timeout,
                       evaluator=evaluator, log=log, gpus_per_trainer=d.gpus_per_trainer,
                       deterministic=d.deterministic)
    from autodl_design.search.local_pool import LocalPool
    threads = worker_threads(d.trainer_devices, os.cpu_count() or 1, d.threads_per_worker)
    return LocalPool(d.trainer_devices, threads, evaluator, log=log,
                     trial_timeout=d.trial_timeout, deterministic=d.deterministic)
