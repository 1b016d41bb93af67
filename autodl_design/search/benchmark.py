"""A search on NAS-Bench-201 (``--benchmark nb201``): the table evaluator behind the worker's gate.

The run goes through the same loop, records, resume, critic and report as a
search on the cell space; what differs is set up here: the table (the
shipped one, checksummed, or ``--benchmark_table``), the evaluator and the
check that the bounds can be met. Each evaluated cell costs its simulated
training time (``12 * train_s_per_epoch + val_eval_s``), which the record's
``seconds`` holds and ``clock.SimulatedClock`` sums; a cell over a hard bound
is never trained and costs nothing. With ``--scheduler`` the rungs are the
table's fidelities (``nb201.FIDELITIES``: 12 and 200 epochs): a cell promoted
to 200 epochs gets the 200-epoch validation accuracy and pays only the epochs
beyond 12 (``nb201.TableEvaluator.evaluate``).
"""
import dataclasses
from typing import Dict, Tuple

from autodl_design import critic, nb201
from autodl_design.config import Config, ConstraintConfig
from autodl_design.evaluation import WorkerSetupError, evaluate_candidate
from autodl_design.search.errors import SearchError

CHEAP = ("params", "latency_ms", "nb201_index")  # known before "training"
TRAINED = ("val_accuracy", "test_accuracy")
RUNG = ("epochs", "resumed_at_epoch")  # with a scheduler's options only


class BenchmarkEvaluator:
    """An ``Evaluator`` of NAS-Bench-201 cells: the table's figures, gated like a trainer's.

    The cheap metrics (params, latency on the chosen device, the table row)
    pass ``evaluation.evaluate_candidate``'s gate first; a cell it stops
    (over a hard bound) gets no accuracy and ``seconds`` 0, a trained one
    its accuracies and ``seconds`` = its simulated cost.

    Args:
      table_evaluator: ``nb201.TableEvaluator`` (set up already, or by ``setup``).
      constraints: the run's bounds.
    """

    def __init__(self, table_evaluator: nb201.TableEvaluator, constraints: ConstraintConfig):
        self.table_evaluator = table_evaluator
        self.constraints = constraints
        self.source = "NAS-Bench-201 table, %s" % table_evaluator.latency_device

    def setup(self, device: str, threads: int) -> None:
        """Loads the table unless it is loaded.

        Raises:
          WorkerSetupError: the table is missing or damaged (one line).
        """
        if self.table_evaluator.table is not None:
            return
        try:
            self.table_evaluator.setup(device, threads)
        except ValueError as e:
            raise WorkerSetupError(str(e)) from None

    def evaluate(self, candidate: Dict, index: int, seed: int, options: Dict) -> Dict:
        """The cell's metrics (see ``nb201.TableEvaluator.evaluate``) with ``seconds``."""
        m = self.table_evaluator.evaluate(candidate, index, seed, options)
        cheap = {k: m[k] for k in CHEAP}
        cheap["latency_source"] = self.source

        def train(_) -> Dict:
            out = {k: m[k] for k in TRAINED + RUNG if k in m}
            out.update(status="ok", seconds=m["simulated_seconds"])
            return out

        result = evaluate_candidate(candidate, self.constraints, lambda _: cheap, train)
        result.setdefault("seconds", 0.0)
        return result


def open_benchmark(config: Config) -> Tuple[Config, BenchmarkEvaluator]:
    """Checks a ``--benchmark nb201`` config, loads its table, and makes its evaluator.

    Returns:
      (config with the batch size the searcher uses, the evaluator with the
      table loaded).

    Raises:
      ValueError: the table is missing or damaged (``nb201.load_table``).
      SearchError: a setting the table cannot serve (FLOPs or memory bounds,
        median early termination), or a bound below every cell's.
    """
    if config.search.benchmark != "nb201":
        raise SearchError("unknown benchmark %r: use nb201" % config.search.benchmark)
    c = config.constraints
    unserved = [name for name, on in (("--max_flops", c.max_flops > 0),
                                      ("--max_memory_mb", c.max_memory_mb > 0),
                                      ("--early_termination median",
                                       config.search.early_termination != "none")) if on]
    if unserved:
        raise SearchError("--benchmark nb201: the table has no FLOPs, memory or training "
                          "curves; remove %s" % ", ".join(unserved))
    table_evaluator = nb201.TableEvaluator(config.search.benchmark_table,
                                           config.search.latency_device)
    table_evaluator.setup("cpu", 1)  # ValueError for a missing or damaged table
    table = table_evaluator.table
    lowest = {"params": float(table.column("params_mb").min()) * 1e6,
              "latency_ms": float(table.latency_ms(config.search.latency_device).min())}
    problem = critic.check_satisfiable(c, lowest)
    if problem:
        raise SearchError("%s (NAS-Bench-201, latency on %s)"
                          % (problem.replace("; raise the bound or shrink the network",
                                             "; raise the bound"),
                             config.search.latency_device))
    if config.search.searcher == "rl":
        from autodl_design.search.searchers import NB201_RL_SETTINGS
        batch = NB201_RL_SETTINGS.agent_config().batch_size
        config = dataclasses.replace(config, agent=dataclasses.replace(config.agent,
                                                                       batch_size=batch))
    return config, BenchmarkEvaluator(table_evaluator, c)


def header(config: Config) -> str:
    """The first line of a benchmark run: space, table, budget, searcher and its settings."""
    s = config.search
    budget = ("%g simulated seconds (at most %d evaluations)" % (s.max_time, s.num_models)
              if s.max_time > 0 else "%d evaluations" % s.num_models)
    line = ("autodl-design: %s search on NAS-Bench-201 (CIFAR-10 table %s, latency on %s); "
            "budget %s; log_dir %s" % (s.searcher, s.benchmark_table or "shipped",
                                       s.latency_device, budget, s.log_dir))
    if s.scheduler != "none":
        line += ("; scheduler %s (rungs at the table's %s epochs, eta %d)"
                 % (s.scheduler, " and ".join(map(str, nb201.FIDELITIES)), s.eta))
    if s.searcher == "rl":
        from autodl_design.search.searchers import NB201_RL_SETTINGS
        a = NB201_RL_SETTINGS
        cfg = a.agent_config()
        line += ("; controller: NAS-Bench-201's settings (searchers.NB201_RL_SETTINGS: "
                 "learning_rate %g, batch_size %d, advantage %s, ppo_epochs %d, unique %s), "
                 "not the controller flags (those are the cell space's)"
                 % (cfg.learning_rate, cfg.batch_size, a.advantage, a.ppo_epochs, a.unique))
    return line
