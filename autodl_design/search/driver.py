"""The driver: turns a Config into a running search (pool, searcher, loop, summary, report)."""
import dataclasses
import math
import os
from typing import Callable, Dict

from autodl_design import critic, records
from autodl_design.arch import Architecture
from autodl_design.config import Config
from autodl_design.search.loop import REAL_EVALUATE, REAL_SETUP, Search, SearchError, SearchResult



def summary_table(result: SearchResult, config: Config) -> str:
    """The end-of-run summary as readable text."""
    s = result.state
    counts = {k: 0 for k in records.STATUSES}
    for r in s.records:
        counts[r["status"]] += 1
    lines = ["", "=" * 72, "Search summary (%s)" % config.search.log_dir, "=" * 72]
    bounds = config.constraints.bounds()
    lines.append("constraints: %s" % (", ".join("%s <= %g" % kv for kv in bounds.items())
                                      + " (%s mode)" % config.constraints.mode
                                      if bounds else "none"))
    best = result.best
    if best is None:
        lines.append(critic.NO_FEASIBLE_MESSAGE)
        if result.closest is not None:
            c = result.closest
            feas = critic.check(c["metrics"], config.constraints)
            lines.append("closest candidate: #%d (%s)" % (c["index"], feas.text))
            best = c
    if best is not None:
        arch = Architecture.from_dict(best["arch"])
        m = best["metrics"]
        lines.append("best architecture: #%d (step %d, hash %s)"
                     % (best["index"], best["step"], best["arch_hash"][:12]))
        lines.extend("  " + l for l in arch.describe().splitlines())
        rows = [("val accuracy", _fmt(m.get("val_accuracy"), "%.4f")),
                ("test accuracy", _fmt(m.get("test_accuracy"), "%.4f")),
                ("reward", _fmt(best.get("reward"), "%.4f")),
                ("params", _fmt(m.get("params"), "%d")),
                ("FLOPs (mult-adds/image)", _fmt(m.get("flops"), "%d")),
                ("latency (ms, %s)" % m.get("latency_source", "median"),
                 _fmt(m.get("latency_ms"), "%.3f")),
                ("memory (MB, %s)" % m.get("memory_source", "?"), _fmt(m.get("memory_mb"), "%.2f"))]
        width = max(len(k) for k, _ in rows)
        lines.extend("  %-*s  %s" % (width, k, v) for k, v in rows)
        lines.append("  architecture JSON: %s" % os.path.join(config.search.log_dir,
                                                             records.BEST_FILE))
    n = len(s.records)
    hours = result.seconds / 3600.0
    lines.append("evaluations: %d (ok %d, failed %d, infeasible %d, duplicates %d)"
                 % (n, counts["ok"], counts["failed"], counts["infeasible"], counts["duplicate"]))
    lines.append("wall time: %.0f s, %.1f evaluations/hour, %d controller steps taking %.1f s "
                 "(%.1f%% of wall time)%s"
                 % (result.seconds, n / hours if hours > 0 else 0.0, result.steps,
                    result.searcher_seconds,
                    100.0 * result.searcher_seconds / result.seconds if result.seconds else 0.0,
                    ", %d worker restarts" % result.restarts if result.restarts else ""))
    if result.interrupted:
        lines.append("interrupted: continue with --resume --log_dir %s" % config.search.log_dir)
    return "\n".join(lines)


def _fmt(v, pattern: str) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return pattern % v
    return "n/a"


def run_from_config(config: Config, log: Callable[[str], None] = None,
                    setup_path: str = REAL_SETUP, eval_path: str = REAL_EVALUATE) -> int:
    """Runs a whole search as main.py does; returns the process exit code.

    0 on success (also when no candidate satisfied the constraints), 2 for bad
    input (data, unsatisfiable bounds, a log_dir that does not fit --resume),
    130 after Ctrl-C.
    """
    import sys
    from autodl_design.search import searchers
    if log is None:
        def log(line):
            print(line, flush=True)
    data_path = config.data.data_path
    trainers = ("ray:%s" % config.devices.ray_address if config.devices.cluster == "ray"
                else ",".join(config.devices.trainer_devices))
    log("autodl-design: %s search on %s; preset %s, %d evaluations, trainers %s, log_dir %s"
        % (config.search.searcher,
           data_path if data_path else "the embedded default data (real Fashion-MNIST, %d "
           "images per class)" % config.data.images_per_class,
           config.search.preset, config.search.num_models, trainers, config.search.log_dir))
    try:
        if not data_path:
            from trainer.data import ensure_default_dataset
            data_path = ensure_default_dataset(config.data.images_per_class, log=log)
        data_path = os.path.abspath(data_path)
        config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                      data_path=data_path))
        from trainer.data import read_manifest
        manifest = read_manifest(data_path)
        log("data: %s (%s, %d classes, images %s)"
            % (data_path, manifest["source"], len(manifest["class_names"]),
               "x".join(map(str, manifest["image_shape_hwc"]))))
        from trainer import evaluate as real_eval
        problem = real_eval.unsatisfiable(config, manifest)
        if problem:
            raise SearchError(problem)
        searcher = searchers.make_searcher(config)
        pool = make_pool(config, setup_path, eval_path,
                         {"data_path": data_path, "config_dict": config.to_dict()}, log)
    except (SearchError, ValueError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    return execute(config, searcher, pool, log)


def make_pool(config: Config, setup_path: str, eval_path: str, setup_args: Dict, log):
    """The trainer pool the config asks for (not started)."""
    from autodl_design.devices import threads_per_worker
    d = config.devices
    if d.cluster == "ray":
        try:
            from autodl_design.search.ray_pool import RayPool
            import ray  # noqa: F401
        except ImportError:
            raise SearchError("--cluster ray needs Ray: run WITH_RAY=1 bash setup.sh") from None
        return RayPool(d.ray_address, d.num_trainers, d.cpus_per_trainer,
                       use_gpus=True,
                       max_retries=d.max_retries, trial_timeout=d.trial_timeout,
                       setup_path=setup_path, eval_path=eval_path, setup_args=setup_args,
                       log=log)
    from autodl_design.search.local_pool import LocalPool
    threads = threads_per_worker(d.trainer_devices, os.cpu_count() or 1, d.threads_per_worker)
    return LocalPool(d.trainer_devices, threads, setup_path, eval_path, setup_args, log=log,
                     trial_timeout=d.trial_timeout)


def execute(config: Config, searcher, pool, log: Callable[[str], None]) -> int:
    """Starts ``pool``, runs the search, prints the summary; returns the exit code."""
    import sys
    search = Search(config, searcher, pool, log=log)
    try:
        pool.start()
        result = search.run()
    except (SearchError, RuntimeError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        search.interrupted = True
        result = search.result()
    finally:
        pool.terminate()
    log(summary_table(result, config))
    if result.state.records:
        from autodl_design.search import report
        try:
            log("report: %s" % report.write_report(config.search.log_dir))
        except (ValueError, OSError) as e:
            log("report could not be written: %s" % e)
    return 130 if result.interrupted else 0
