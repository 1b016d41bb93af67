"""NAS-Bench-201 yardstick: the project's searchers under the paper's protocol, next to its figures.

Per run a searcher proposes cells (``autodl_design.nb201.run_protocol``):
a new cell costs its simulated training time (``12 * train_s_per_epoch +
val_eval_s``) and returns ``val_acc_12ep``; a repeated cell costs nothing;
the run stops when ``--budget`` simulated seconds are spent and reports the
best-reward cell's ``test_acc_200ep``. Searchers: ``random``
(RandomSearcher), ``evolution`` (EvolutionSearcher, regularized evolution,
``--population`` 10, ``--sample_size`` 3, one cell at a time) and ``rl``
(the PARL controller through agent.space_searcher.SpaceRLSearcher with
``nb201.NB201_CONTROLLER``, overridable with ``--controller JSON``) and
``tpe`` (Optuna's TPE, ``optuna_searchers.TPE_SETTINGS``, overridable with
``--tpe JSON``; one cell at a time; shown next to the paper's BOHB; under a
latency bound it is told the cells' latencies, so the bound reaches it as an
Optuna constraint, as in main.py's loop).

Constrained runs (``--latency_bounds``, Raspberry Pi 4 latency in ms, hard
mode): a cell over the bound is never trained, so it costs nothing, gets
``--infeasible_reward`` and can never be the answer; reported as the mean
regret to the exact constrained optimum and the share of runs whose answer
is feasible (a run that found no feasible cell has no answer). rl runs there
with ``nb201.NB201_CONSTRAINED_CONTROLLER`` (``--constrained_controller JSON``
overrides it), which learns only from feasible cells (reward None for the
others, whatever ``--infeasible_reward``). ``--infeasible_rule`` tries other
rewards for infeasible cells (``nb201.run_protocol``).

    .venv/bin/python benchmarks/bench_nb201.py --runs 500

Epoch-budget schedulers (``--schedulers successive_halving,hyperband``, and
``none`` for the same loop without one): each (searcher, scheduler) pair runs
``--scheduler_runs`` seeded searches through the search loop itself, as
``main.py --benchmark nb201 --searcher S --scheduler X --max_time BUDGET``
does (``search.loop.Search`` with the table evaluator in this process; no
report is drawn), its rungs being the table's 12 and 200 epochs: a cell
promoted to 200 epochs gets the 200-epoch validation accuracy and pays the
188 extra epochs. Reported: mean +- std ``test_acc_200ep`` of the best record
the loop reports, evaluations (and how many at 200 epochs) and distinct cells
per run. The loop pays for the evaluation that crosses the budget (the
protocol stops before it) and evolution runs with ``--population`` and
``--sample_size`` as the protocol's; other settings are main.py's defaults.

``--runs 0`` runs the constrained (or scheduler) rows only; ``--update``
keeps the rows of ``--bench_out`` that a command does not re-run.

    .venv/bin/python benchmarks/bench_nb201.py --runs 0 --latency_bounds '' \
        --searchers random,tpe --schedulers none,successive_halving,hyperband --update

Prints tables, writes JSON (default benchmarks/results/nb201.json) and a PNG
of test accuracy against simulated time next to it.
"""
import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from autodl_design import nb201  # noqa: E402
from autodl_design.config import SCHEDULERS  # noqa: E402
from autodl_design.records import atomic_write_json  # noqa: E402

SEARCHERS = ("rl", "random", "evolution", "tpe")
PAPER_NAME = {"rl": "REINFORCE", "random": "random", "evolution": "REA", "tpe": "BOHB"}
GRID_POINTS = 121

_TABLE: Optional[nb201.NB201Table] = None  # the table of this worker process


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=500, help="Runs per searcher (seeds seed..).")
    p.add_argument("--searchers", default="rl,random,evolution",
                   help="Comma-separated: rl, random, evolution, tpe.")
    p.add_argument("--table", default="", help="Table file ('' = the shipped copy).")
    p.add_argument("--budget", type=float, default=12000.0, help="Simulated seconds per run.")
    p.add_argument("--bench_out", default=os.path.join(ROOT, "benchmarks", "results",
                                                       "nb201.json"), help="JSON output.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the first run.")
    p.add_argument("--workers", type=int, default=2, help="Processes.")
    p.add_argument("--latency_bounds", default="8,12",
                   help="Raspberry Pi 4 latency bounds (ms) of the constrained runs; '' = none.")
    p.add_argument("--constrained_runs", type=int, default=-1,
                   help="Runs per searcher and bound (-1 = --runs).")
    p.add_argument("--infeasible_reward", default="0",
                   help="Reward of a cell over the bound ('none': not learned from, like a "
                   "failed cell).")
    p.add_argument("--infeasible_rule", default="constant", choices=nb201.INFEASIBLE_RULES,
                   help="How a cell over the bound is rewarded (nb201.run_protocol).")
    p.add_argument("--soft_beta", type=float, default=-0.07,
                   help="Exponent of --infeasible_rule soft (MnasNet).")
    p.add_argument("--update", action="store_true",
                   help="Keep the rows of --bench_out that this command does not run "
                   "(e.g. re-run only the constrained rows of one searcher).")
    p.add_argument("--controller", default="",
                   help="JSON overrides of nb201.NB201_CONTROLLER, e.g. '{\"learning_rate\": 0.01}'.")
    p.add_argument("--tpe", default="",
                   help="JSON overrides of optuna_searchers.TPE_SETTINGS, e.g. "
                   "'{\"n_startup_trials\": 20}'.")
    p.add_argument("--constrained_controller", default="",
                   help="JSON overrides of nb201.NB201_CONSTRAINED_CONTROLLER, rl's settings in "
                   "the constrained runs (e.g. '{\"skip_infeasible\": false}').")
    p.add_argument("--population", type=int, default=10, help="Evolution population.")
    p.add_argument("--sample_size", type=int, default=3, help="Evolution tournament size.")
    p.add_argument("--max_idle_proposals", type=int, default=300,
                   help="Ends a run after this many free (repeated/infeasible) proposals in a row.")
    p.add_argument("--no_plot", action="store_true", help="Skip the PNG.")
    p.add_argument("--schedulers", default="",
                   help="Comma-separated epoch-budget schedulers run through the search loop "
                   "with each searcher: none, successive_halving, hyperband ('' = none of these "
                   "rows).")
    p.add_argument("--scheduler_runs", type=int, default=100,
                   help="Runs per (searcher, scheduler) pair (seeds seed..).")
    p.add_argument("--eta", type=int, default=3,
                   help="Schedulers' reduction factor (cells at 12 epochs per one at 200).")
    args = p.parse_args(argv)
    args.schedulers = [s for s in args.schedulers.split(",") if s]
    unknown = [s for s in args.schedulers if s not in SCHEDULERS]
    if unknown:
        p.error("--schedulers: unknown %s; use %s" % (unknown, ",".join(SCHEDULERS)))
    if args.eta < 2 or args.scheduler_runs < 1:
        p.error("--eta must be >= 2 and --scheduler_runs >= 1")
    args.searchers = [s for s in args.searchers.split(",") if s]
    unknown = [s for s in args.searchers if s not in SEARCHERS]
    if unknown or not args.searchers:
        p.error("--searchers: unknown %s; use %s" % (unknown, ",".join(SEARCHERS)))
    args.latency_bounds = [float(b) for b in args.latency_bounds.split(",") if b]
    try:
        args.infeasible_reward = (None if args.infeasible_reward.lower() == "none"
                                  else float(args.infeasible_reward))
    except ValueError:
        p.error("--infeasible_reward: %r is not a number or 'none'" % args.infeasible_reward)
    if args.runs < 0:
        p.error("--runs must be >= 0 (0: constrained runs only)")
    if args.constrained_runs < 0:
        args.constrained_runs = args.runs
    return args


def controller_settings(overrides: str, base: nb201.ControllerSettings = nb201.NB201_CONTROLLER
                        ) -> nb201.ControllerSettings:
    """``base`` (default ``NB201_CONTROLLER``) with the JSON ``overrides`` applied."""
    if not overrides:
        return base
    return base.replace(**json.loads(overrides))


def make_searcher(name: str, seed: int, settings: nb201.ControllerSettings,
                  population: int, sample_size: int, tpe: Dict,
                  bound: float = 0.0) -> Tuple[object, int]:
    """(searcher, cells per proposal) for one run."""
    space = nb201.NB201Space()
    if name == "random":
        from autodl_design.search.searchers import RandomSearcher
        return RandomSearcher(space, seed), 1
    if name == "evolution":
        from autodl_design.search.searchers import EvolutionSearcher
        return EvolutionSearcher(space, seed, population, sample_size), 1
    if name == "tpe":
        from autodl_design.config import ConstraintConfig
        from autodl_design.search.optuna_searchers import TPESearcher
        return TPESearcher(space, seed, ConstraintConfig(max_latency_ms=bound), **tpe), 1
    from agent.space_searcher import SpaceRLSearcher
    return (SpaceRLSearcher(space, settings.agent_config(), seed,
                            **settings.searcher_options()), settings.batch_size)


def tpe_settings(overrides: str) -> Dict:
    """``optuna_searchers.TPE_SETTINGS`` with the JSON ``overrides`` applied (TypeError if unknown)."""
    from autodl_design.search.optuna_searchers import TPE_SETTINGS
    extra = json.loads(overrides) if overrides else {}
    unknown = sorted(set(extra) - set(TPE_SETTINGS))
    if unknown:
        raise TypeError("--tpe: unknown settings %s; use %s" % (unknown, sorted(TPE_SETTINGS)))
    return dict(TPE_SETTINGS, **extra)


class LatencyRecords:
    """A tpe searcher under a Raspberry Pi 4 bound, told what main.py's loop tells it.

    ``run_protocol`` hands rewards to ``observe``; the loop hands records, whose
    metrics carry the latency, so the bound reaches TPE as an Optuna constraint
    (``observe_records``). This turns the rewards into those records.
    """

    def __init__(self, searcher, table: nb201.NB201Table):
        self.searcher = searcher
        self.latency = table.latency_ms("raspi4")
        self.table = table

    @property
    def step(self) -> int:
        return self.searcher.step

    def propose(self, n: int):
        return self.searcher.propose(n)

    def observe(self, cands, rewards):
        rows = self.table.rows(np.stack([c.tokens for c in cands]))
        self.searcher.observe_records(cands, [
            {"status": "ok", "reward": r, "metrics": {"latency_ms": float(self.latency[row])}}
            for r, row in zip(rewards, rows.tolist())])


def _init_worker(table_path: str):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    global _TABLE
    _TABLE = nb201.load_table(table_path if table_path else None)


def one_run(task: Tuple) -> Dict:
    """Runs one (searcher, seed, bound) task in a worker; returns its figures and curve."""
    name, seed, bound, settings, args = task
    searcher, batch = make_searcher(name, seed, settings, args["population"],
                                    args["sample_size"], args["tpe"], bound)
    if bound > 0 and name == "tpe":
        searcher = LatencyRecords(searcher, _TABLE)
    t0 = time.perf_counter()
    res = nb201.run_protocol(searcher, _TABLE, batch, args["budget"], max_latency_ms=bound,
                             infeasible_reward=(None if name == "rl" and settings.skip_infeasible
                                                else args["infeasible_reward"]),
                             max_idle_proposals=args["max_idle_proposals"],
                             infeasible_rule=args["infeasible_rule"], soft_beta=args["soft_beta"])
    grid = np.linspace(0.0, args["budget"], GRID_POINTS)
    k = np.searchsorted(res.curve_t, grid, side="right") - 1
    curve = np.where(k >= 0, res.curve_test[np.maximum(k, 0)] if len(res.curve_test) else np.nan,
                     np.nan)
    return {"name": name, "seed": seed, "bound": bound, "test": res.test_acc,
            "evals": res.evaluations, "proposals": res.proposals, "stalled": res.stalled,
            "feasible": res.feasible, "curve": curve, "seconds": time.perf_counter() - t0}


def loop_config(name: str, scheduler: str, seed: int, args: Dict, log_dir: str):
    """The ``Config`` of ``main.py --benchmark nb201 --searcher name --scheduler scheduler
    --max_time budget --seed seed`` (evolution with the protocol's population and sample size)."""
    from autodl_design import config as cfg
    search = cfg.SearchConfig(
        num_models=cfg.BENCHMARK_NUM_MODELS, max_time=args["budget"], log_dir=log_dir,
        seed=seed, searcher=name, population=args["population"],
        sample_size=args["sample_size"], benchmark="nb201", benchmark_table=args["table"],
        scheduler=scheduler, eta=args["eta"])
    return cfg.Config(cfg.DataConfig(), cfg.AgentConfig(), cfg.TrainerConfig(),
                      cfg.ConstraintConfig(), cfg.DeviceConfig(), search)


def loop_run(task: Tuple) -> Dict:
    """Runs one (searcher, scheduler, seed) search through the search loop; returns its figures.

    The loop, records and clock of ``driver.run_benchmark`` (``driver.run_loop``)
    in a temporary log folder, without the summary and report.
    """
    from autodl_design.search.benchmark import open_benchmark
    from autodl_design.search.driver import run_loop
    from autodl_design.search.inline_pool import InlinePool
    from autodl_design.search.searchers import make_searcher, make_space
    name, scheduler, seed, args = task
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        config, evaluator = open_benchmark(loop_config(name, scheduler, seed, args,
                                                       os.path.join(tmp, "log")))
        space = make_space(config)
        result = run_loop(config, space, make_searcher(config, space), InlinePool(evaluator),
                          lambda line: None)
    paid = [r for r in result.state.records if r["status"] == "ok"]
    best = result.best
    return {"name": name, "scheduler": scheduler, "seed": seed,
            "test": best["metrics"]["test_accuracy"] * 100 if best else float("nan"),
            "feasible": best is not None, "evals": len(paid),
            "evals_200": sum(r["metrics"].get("epochs") == 200 for r in paid),
            "cells": len({r["arch_hash"] for r in paid}), "spent_s": result.seconds,
            "proposals": len(result.state.records), "stalled": False,
            "seconds": time.perf_counter() - t0}


def run_tasks(tasks: List[Tuple], workers: int, table_path: str, fn=one_run) -> List[Dict]:
    """``fn`` (``one_run`` or ``loop_run``) over ``tasks`` on ``workers`` processes."""
    if workers <= 1:
        _init_worker(table_path)
        return [fn(t) for t in tasks]
    # Not multiprocessing.Pool: its daemonic workers cannot import PARL (it starts a Manager).
    # fork: PARL's import-time framework check cannot run in a spawned process.
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx,
                                                initializer=_init_worker,
                                                initargs=(table_path,)) as pool:
        return list(pool.map(fn, tasks, chunksize=max(1, len(tasks) // (8 * workers))))


def summarise(rows: List[Dict]) -> Dict:
    test = np.array([r["test"] for r in rows if r["feasible"]])
    return {"mean_test": float(test.mean()) if test.size else None,
            "std_test": float(test.std()) if test.size else None,
            "mean_evals": float(np.mean([r["evals"] for r in rows])),
            "mean_proposals": float(np.mean([r["proposals"] for r in rows])),
            "stalled_runs": int(sum(r["stalled"] for r in rows)),
            "runs": len(rows), "cpu_seconds": float(sum(r["seconds"] for r in rows))}


def write(path: str, out: Dict):
    """Writes the results so far (atomically: an interrupted benchmark keeps what it finished)."""
    out["date"] = time.strftime("%Y-%m-%d %H:%M")
    atomic_write_json(path, out)


def merge_base(path: str, fresh: Dict) -> Dict:
    """``fresh`` on top of the results already in ``path`` (``--update``): rows not re-run stay."""
    with open(path) as f:
        old = json.load(f)
    # seed, budget and controller stay those of the unconstrained rows kept (constrained rows
    # carry their own seed and settings)
    old.update({k: fresh[k] for k in ("table", "table_sha256", "paper", "optimum")})
    old.setdefault("searchers", {})
    old.setdefault("constrained", {})
    old.setdefault("schedulers", {})
    return old


def scheduler_key(name: str, scheduler: str, eta: int) -> str:
    """The key of a (searcher, scheduler) row in the JSON's ``schedulers``."""
    return "%s+%s" % (name, scheduler) + ("+eta%d" % eta if scheduler != "none" else "")


def run_scheduler_rows(args: argparse.Namespace, common: Dict, out: Dict) -> None:
    """Runs every (searcher, scheduler) pair through the search loop into ``out["schedulers"]``
    (written after each pair) and prints its table, rows already in ``out`` included."""
    for name in args.searchers:
        for scheduler in args.schedulers:
            tasks = [(name, scheduler, args.seed + r, dict(common, table=args.table, eta=args.eta))
                     for r in range(args.scheduler_runs)]
            t0 = time.time()
            rows = run_tasks(tasks, args.workers, args.table, loop_run)
            s = summarise(rows)
            s.update(searcher=name, scheduler=scheduler, eta=args.eta, seed=args.seed,
                     budget_s=args.budget, wall_seconds=time.time() - t0,
                     mean_evals_200=float(np.mean([r["evals_200"] for r in rows])),
                     mean_cells=float(np.mean([r["cells"] for r in rows])),
                     mean_spent_s=float(np.mean([r["spent_s"] for r in rows])))
            if name == "evolution":
                s.update(population=args.population, sample_size=args.sample_size)
            out["schedulers"][scheduler_key(name, scheduler, args.eta)] = s
            write(args.bench_out, out)
            print("  %-9s %-18s %d runs in %.1f s wall: %s +- %s" % (
                name, scheduler, s["runs"], s["wall_seconds"], _fmt(s["mean_test"]),
                _fmt(s["std_test"])), flush=True)
    print()
    print("| searcher | scheduler | runs | test acc (%) mean +- std | evaluations per run "
          "(at 200 epochs) | cells per run |")
    print("|---|---|---|---|---|---|")
    for s in out["schedulers"].values():
        print("| %s | %s | %d | %s +- %s | %.1f (%.1f) | %.1f |" % (
            s["searcher"], s["scheduler"] + (" (eta %d)" % s["eta"] if s["scheduler"] != "none"
                                             else ""),
            s["runs"], _fmt(s["mean_test"]), _fmt(s["std_test"]), s["mean_evals"],
            s["mean_evals_200"], s["mean_cells"]))


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else "%.2f" % x


def plot(curves: Dict[str, np.ndarray], budget: float, png: str):
    """Mean and +-1 std band of the best cell's test accuracy vs simulated time, per searcher."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    grid = np.linspace(0.0, budget, GRID_POINTS)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, c in curves.items():
        ok = ~np.isnan(c).any(axis=0)
        mean, std = c[:, ok].mean(0), c[:, ok].std(0)
        ax.plot(grid[ok], mean, label="%s (%d runs)" % (name, c.shape[0]))
        ax.fill_between(grid[ok], mean - std, mean + std, alpha=0.2)
    ax.axhline(nb201.PAPER_OPTIMUM, color="k", ls=":", lw=1, label="optimum 94.37")
    ax.set_ylim(92.5, 94.6)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("test accuracy of the best-reward cell (%)")
    ax.set_title("NAS-Bench-201 CIFAR-10, paper protocol")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        table = nb201.load_table(args.table if args.table else None)
        settings = controller_settings(args.controller)
        tpe = tpe_settings(args.tpe)
        constrained_settings = controller_settings(args.constrained_controller,
                                                   nb201.NB201_CONSTRAINED_CONTROLLER)
    except (ValueError, TypeError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    common = {"budget": args.budget, "infeasible_reward": args.infeasible_reward,
              "infeasible_rule": args.infeasible_rule, "soft_beta": args.soft_beta,
              "population": args.population, "sample_size": args.sample_size,
              "max_idle_proposals": args.max_idle_proposals, "tpe": tpe}
    print("NAS-Bench-201 benchmark: %d runs per searcher, budget %.0f s, seeds %d.., %d workers, "
          "table %s" % (args.runs, args.budget, args.seed, args.workers, table.path), flush=True)
    if "rl" in args.searchers:
        print("rl controller: %s" % settings.flat(), flush=True)
        if args.latency_bounds:
            print("rl controller under a bound: %s" % constrained_settings.flat(), flush=True)
    if "tpe" in args.searchers:
        print("tpe sampler: %s" % tpe, flush=True)
    out = {"searchers": {}, "constrained": {}, "budget_s": args.budget, "seed": args.seed,
           "table": table.path, "table_sha256": table.sha256,
           "controller": settings.flat(), "tpe": tpe,
           "paper": {k: {"mean_test": m, "std_test": s}
                     for k, (m, s) in nb201.PAPER_RESULTS.items()},
           "optimum": nb201.PAPER_OPTIMUM}
    if args.update and os.path.exists(args.bench_out):
        out = merge_base(args.bench_out, out)
    curves = {}
    wall = {}
    for name in (args.searchers if args.runs > 0 else []):
        tasks = [(name, args.seed + r, 0.0, settings, common) for r in range(args.runs)]
        t0 = time.time()
        rows = run_tasks(tasks, args.workers, args.table)
        wall[name] = time.time() - t0
        out["searchers"][name] = dict(summarise(rows), wall_seconds=wall[name])
        out.update(seed=args.seed, budget_s=args.budget)
        if name == "rl":
            out["controller"] = settings.flat()
        write(args.bench_out, out)
        curves[name] = np.stack([r["curve"] for r in rows])
        s = out["searchers"][name]
        print("  %-9s %d runs in %.1f s wall: %.2f +- %.2f, %.1f evaluations"
              % (name, args.runs, wall[name], s["mean_test"], s["std_test"], s["mean_evals"]),
              flush=True)
    print()
    print("| searcher | runs | test acc (%) mean +- std | evaluations per run | paper (500 runs) |")
    print("|---|---|---|---|---|")
    for name in (args.searchers if args.runs > 0 else []):
        s = out["searchers"][name]
        pm, ps = nb201.PAPER_RESULTS[PAPER_NAME[name]]
        print("| %s | %d | %.2f +- %.2f | %.1f | %s %.2f +- %.2f |" % (
            name, s["runs"], s["mean_test"], s["std_test"], s["mean_evals"], PAPER_NAME[name],
            pm, ps))
    print("| BOHB (paper) | 500 | %.2f +- %.2f | | |" % nb201.PAPER_RESULTS["BOHB"])
    print("| optimum | | %.2f | | |" % nb201.PAPER_OPTIMUM)
    for bound in (args.latency_bounds if args.constrained_runs > 0 else []):
        _, optimum = table.best_test(bound, "raspi4")
        key = "raspi4_latency_ms<=%g" % bound
        entry = out["constrained"].get(key, {"searchers": {}})
        entry.update(bound_ms=bound, optimum_test=optimum)
        for name in args.searchers:
            tasks = [(name, args.seed + r, bound, constrained_settings, common)
                     for r in range(args.constrained_runs)]
            rows = run_tasks(tasks, args.workers, args.table)
            s = summarise(rows)
            feasible = [r for r in rows if r["feasible"]]
            s["feasible_share"] = len(feasible) / len(rows)
            s["mean_regret"] = (float(np.mean([optimum - r["test"] for r in feasible]))
                                if feasible else None)
            s.update(seed=args.seed, infeasible_rule=args.infeasible_rule,
                     infeasible_reward=(None if name == "rl" and constrained_settings.skip_infeasible
                                        else args.infeasible_reward))
            if args.infeasible_rule == "soft":
                s["soft_beta"] = args.soft_beta
            if name == "rl":
                s["controller"] = constrained_settings.flat()
            entry["searchers"][name] = s
        out["constrained"][key] = entry
        write(args.bench_out, out)
    if args.latency_bounds:
        print()
        print("| searcher | Raspberry Pi 4 bound | runs | test acc (%) | regret to the constrained "
              "optimum | feasible answers | evaluations |")
        print("|---|---|---|---|---|---|---|")
        for key, entry in out["constrained"].items():
            for name, s in entry["searchers"].items():
                print("| %s | <= %g ms (optimum %.2f) | %d | %s +- %s | %s | %.0f%% | %.1f |"
                      % (name, entry["bound_ms"], entry["optimum_test"], s["runs"],
                         _fmt(s["mean_test"]), _fmt(s["std_test"]), _fmt(s["mean_regret"]),
                         100 * s["feasible_share"], s["mean_evals"]))
    out.setdefault("schedulers", {})
    if args.schedulers:
        run_scheduler_rows(args, common, out)
    write(args.bench_out, out)
    png = os.path.splitext(args.bench_out)[0] + ".png"
    if args.no_plot or not curves:
        png = ""
    else:
        plot(curves, args.budget, png)
    print("wrote %s%s" % (args.bench_out, " and %s" % png if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
