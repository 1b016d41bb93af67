"""The driver: turns a Config into a running search (data, pool, searcher, loop, summary, report).

Exit codes: 0 on success (also when no candidate satisfied the constraints),
2 for bad input (one line on stderr: data, unsatisfiable bounds, a log_dir
that does not fit, a checkpoint the disk refused, a worker refusing its
setup), 130 after Ctrl-C. A bug (e.g. an exception escaping an evaluator,
``WorkerBug``) is raised with its traceback.
"""
import dataclasses
import os
import sys
from typing import Callable, Dict, Optional, Tuple

from autodl_design import recipe
from autodl_design.config import Config
from autodl_design.interfaces import Evaluator, Pool, Searcher, SearchSpace
from autodl_design.search.errors import SearchError, WorkerSetupError
from autodl_design.search.loop import Search
from autodl_design.search.progress import SearchResult, summary_text
from autodl_design.search.run_records import check_log_dir


def _print_line(line: str) -> None:
    print(line, flush=True)


def run_from_config(config: Config, log: Optional[Callable[[str], None]] = None,
                    final_export=None) -> int:
    """Runs a whole search as main.py does, with the real trainer; returns the exit code.

    ``final_export`` (an ``autodl_design.search.export_best.FinalExport``, or
    None) retrains and exports the best candidate after a search that ended
    with exit code 0.
    """
    from autodl_design.search.pools import make_pool
    from autodl_design.search.searchers import make_searcher, make_space
    if log is None:
        log = _print_line
    if config.search.benchmark:
        return run_benchmark(config, log)
    trainers = ("ray:%s" % config.devices.ray_address if config.devices.cluster == "ray"
                else ",".join(config.devices.trainer_devices))
    log("autodl-design: %s search on %s; preset %s, %d evaluations, trainers %s, log_dir %s"
        % (config.search.searcher if config.search.method == "multi_trial"
           else "%s (one-shot, retraining the top %d)" % (config.search.method,
                                                          config.search.retrain_top),
           _data_text(config),
           config.search.preset, config.search.num_models if config.search.method == "multi_trial"
           else config.search.retrain_top, trainers, config.search.log_dir))
    try:
        check_local_devices(config, log)
        check_log_dir(config.search.log_dir, config.search.resume)  # before preparing data
        config, evaluator = _prepare(config, log)
        if config.search.method != "multi_trial":
            from autodl_design.search import oneshot
            oneshot.check_config(config)
    except (SearchError, ValueError) as e:  # user input: flags, data (DatasetError), bounds
        print("error: %s" % e, file=sys.stderr)
        return 2
    if config.search.method != "multi_trial":
        return oneshot.run(config, log)
    try:
        space = make_space(config)
        searcher = make_searcher(config, space)
        pool = make_pool(config, evaluator, log)
    except (SearchError, ValueError) as e:  # user input: flags, data (DatasetError), bounds
        print("error: %s" % e, file=sys.stderr)
        return 2
    code = execute(config, space, searcher, pool, log)
    if final_export is not None and code == 0:
        from autodl_design.search import export_best
        code = export_best.run(final_export, config, log)
    return code


def _data_text(config: Config) -> str:
    """What the candidates are evaluated on, for the first line of a run."""
    if config.search.evaluator == "toy":
        return "the toy objective (synthetic metrics, no data)"
    if config.data.data_path:
        return config.data.data_path
    return ("the embedded default data (real Fashion-MNIST, %d images per class)"
            % config.data.images_per_class)


def _prepare(config: Config, log: Callable[[str], None]) -> Tuple[Config, Evaluator]:
    """(config with an absolute data_path, the evaluator of its candidates).

    Raises:
      SearchError: bounds no candidate can meet at any scale of the search space,
        a ``--search_space`` resolution larger than the images, or a latency
        table missing one of its scales.
      ValueError: unusable data (``DatasetError``).
    """
    if config.search.evaluator == "toy":
        from autodl_design.toy import ToyEvaluator
        return config, ToyEvaluator(config.to_dict())
    from trainer.evaluate import TrainerEvaluator, unsatisfiable
    config, manifest = _resolve_data(config, log)
    decisions = recipe.parse_decisions(config.search.search_space)  # () without the flag
    problem = unsatisfiable(config, manifest, decisions)
    if problem:
        raise SearchError(problem)
    return config, TrainerEvaluator(config.data.data_path, config.to_dict())


def check_local_devices(config: Config, log: Callable[[str], None],
                        num_gpus: Optional[int] = None) -> None:
    """Refuses devices Paddle does not see; notes a setting that has no effect on CPU.

    Args:
      num_gpus: GPUs Paddle sees; None asks Paddle (``devices.count_gpus``),
        only when a GPU device is configured.

    Raises:
      ValueError: a GPU index at or beyond the GPUs Paddle sees (one line).
    """
    from autodl_design import devices
    d = config.devices
    wanted = [d.agent_device] + (list(d.trainer_devices) if d.cluster == "local" else [])
    if num_gpus is None and any(w.startswith("gpu:") for w in wanted):
        num_gpus = devices.count_gpus()
    devices.check_devices(wanted, num_gpus or 0)
    on_cpu = d.cluster == "local" and all(w == "cpu" for w in d.trainer_devices)
    if config.trainer.amp and on_cpu:
        log("note: --amp is ignored: it applies to GPU trainers only (trainers: %s)"
            % ",".join(d.trainer_devices))


def run_benchmark(config: Config, log: Optional[Callable[[str], None]] = None,
                  pool_delay: float = 0.0) -> int:
    """Runs a whole ``--benchmark`` search in this process (table look-ups); returns the exit code.

    Args:
      config: a config with ``search.benchmark`` set.
      log: callable for progress lines (default: print).
      pool_delay: seconds the in-process pool waits before each evaluation
        (0; a test slows a run down to kill it half-way).
    """
    from autodl_design.search.benchmark import header, open_benchmark
    from autodl_design.search.inline_pool import InlinePool
    from autodl_design.search.searchers import make_searcher, make_space
    if log is None:
        log = _print_line
    log(header(config))
    try:
        check_log_dir(config.search.log_dir, config.search.resume)
        config, evaluator = open_benchmark(config)
        space = make_space(config)
        searcher = make_searcher(config, space)
    except (SearchError, ValueError) as e:  # user input: flags, the table, bounds
        print("error: %s" % e, file=sys.stderr)
        return 2
    return execute(config, space, searcher, InlinePool(evaluator, delay=pool_delay), log)


def _resolve_data(config: Config, log: Callable[[str], None]) -> Tuple[Config, Dict]:
    """(config with an absolute data_path, the dataset's manifest); DatasetError if unusable."""
    from trainer.data import ensure_default_dataset, read_manifest
    data_path = config.data.data_path
    if not data_path:
        data_path = ensure_default_dataset(config.data.images_per_class, log=log)
    data_path = os.path.abspath(data_path)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                  data_path=data_path))
    manifest = read_manifest(data_path)
    log("data: %s (%s, %d classes, images %s)"
        % (data_path, manifest["source"], len(manifest["class_names"]),
           "x".join(map(str, manifest["image_shape_hwc"]))))
    return config, manifest


def run_loop(config: Config, space: SearchSpace, searcher: Searcher, pool: Pool,
             log: Callable[[str], None]) -> SearchResult:
    """Opens the records, starts ``pool`` and runs the search; closes both whatever happens.

    Ctrl-C ends the search early: the result then has ``interrupted`` set.

    Raises:
      SearchError, WorkerSetupError: bad input or environment.
      WorkerBug: an evaluator raised (a bug; its traceback is in the message).
    """
    search = Search(config, space, searcher, pool, log=log)
    try:
        search.open()
        pool.start()
        return search.run()
    except KeyboardInterrupt:
        search.interrupted = True
        return search.result()
    finally:
        search.close()
        pool.terminate()


def execute(config: Config, space: SearchSpace, searcher: Searcher, pool: Pool,
            log: Callable[[str], None]) -> int:
    """Runs the search (``run_loop``), prints the summary, writes the report.

    Returns:
      The exit code (0, 2 for bad input or environment, 130 after Ctrl-C).

    Raises:
      WorkerBug: an evaluator raised (a bug; its traceback is in the message).
    """
    try:
        result = run_loop(config, space, searcher, pool, log)
    except (SearchError, WorkerSetupError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    return _conclude(config, space, result, log)


def _conclude(config: Config, space: SearchSpace, result: SearchResult,
              log: Callable[[str], None]) -> int:
    """Prints the summary and writes the report; a second Ctrl-C skips them (exit 130)."""
    code = 130 if result.interrupted else 0
    try:
        log("\n" + summary_text(config, space, result.state, result.seconds, result))
        if result.state.records:
            from autodl_design.search import report
            try:
                log("report: %s" % report.write_report(config.search.log_dir))
            except (ValueError, OSError) as e:
                log("report could not be written: %s" % e)
    except KeyboardInterrupt:
        log("interrupted again: report skipped")
        return 130
    return code
