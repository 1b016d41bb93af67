"""Helpers shared by the search benchmarks: resolve the data, run one real search."""
import dataclasses
import os
import shutil
import tempfile
import time


def with_default_data(config):
    """``config`` with the embedded default dataset when no --data_path was given."""
    if config.data.data_path:
        return config
    from trainer.data import ensure_default_dataset
    path = ensure_default_dataset(config.data.images_per_class, log=print)
    return dataclasses.replace(config, data=dataclasses.replace(
        config.data, data_path=os.path.abspath(path)))


def run_real_search(config, log=lambda line: None, keep_log_dir=""):
    """Runs one search with the real trainers in a temporary log_dir (``keep_log_dir``: there,
    kept).

    Returns:
      dict: result (SearchResult), records (sorted by index), startup_s
      (worker start-up), workers, devices.
    """
    from autodl_design.search import searchers
    from autodl_design.search.loop import Search
    from autodl_design.search.pools import make_pool
    from trainer.evaluate import TrainerEvaluator
    tmp = tempfile.mkdtemp(prefix="bench-")
    config = dataclasses.replace(config, search=dataclasses.replace(
        config.search, log_dir=keep_log_dir or os.path.join(tmp, "log"), resume=False))
    pool = make_pool(config, TrainerEvaluator(config.data.data_path, config.to_dict()), log)
    t0 = time.time()
    pool.start()
    startup = time.time() - t0
    workers, devices = pool.size, list(pool.devices)
    space = searchers.make_space(config)
    s = Search(config, space, searchers.make_searcher(config, space), pool, log=log)
    try:
        result = s.run()
    finally:
        pool.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"result": result, "records": sorted(result.state.records, key=lambda r: r["index"]),
            "startup_s": startup, "workers": workers, "devices": devices}
