"""Hyperband on Ray actors (a private 127.0.0.1 instance): the saved states travel through the
log folder and the records equal the local run's."""
import os

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray", reason="Ray is the optional extra: WITH_RAY=1 bash setup.sh")

from tests.test_golden import stable  # noqa: E402
from tests.test_ray_pool import make_pool, run  # noqa: E402
from tests.test_scheduler import sched_config  # noqa: E402
from tests.test_search import run as run_local  # noqa: E402


def test_hyperband_on_ray_actors_equals_the_local_run(tmp_path):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        config = sched_config(tmp_path / "ray", "hyperband", num_models=24)
        _, trials, _ = run(config, make_pool(config))
    finally:
        ray.shutdown()
    assert any(t["rung"]["continues"] is not None for t in trials)
    assert all(t["metrics"]["resumed_at_epoch"] > 0 for t in trials
               if t["rung"]["continues"] is not None)
    code, local, _ = run_local(sched_config(tmp_path / "local", "hyperband", num_models=24))
    assert code == 0
    drop = ("worker", "device", "pid")
    clean = lambda ts: [{k: v for k, v in t.items() if k not in drop} for t in stable(ts)]
    assert clean(trials) == clean(local)
