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


def run_real_search(config, log=lambda line: None):
    """Runs one search with the real trainers in a temporary log_dir.

    Returns:
      dict: result (SearchResult), records (sorted by index), startup_s
      (worker start-up), workers, devices.
    """
    from autodl_design.search import driver as search, searchers
    tmp = tempfile.mkdtemp(prefix="bench-")
    config = dataclasses.replace(config, search=dataclasses.replace(
        config.search, log_dir=os.path.join(tmp, "log"), resume=False))
    pool = search.make_pool(config, search.REAL_SETUP, search.REAL_EVALUATE,
                            {"data_path": config.data.data_path,
                             "config_dict": config.to_dict()}, log)
    t0 = time.time()
    pool.start()
    startup = time.time() - t0
    workers, devices = pool.size, list(pool.devices)
    s = search.Search(config, searchers.make_searcher(config), pool, log=log)
    try:
        result = s.run()
    finally:
        pool.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"result": result, "records": sorted(result.state.records, key=lambda r: r["index"]),
            "startup_s": startup, "workers": workers, "devices": devices}
