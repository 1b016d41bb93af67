"""Optuna's TPE and NSGA-II as searchers: ask-and-tell over every decision of any search space.

Each decision of ``space.decisions()`` (cell ops, recipe decisions, edge
bits) is one Optuna categorical parameter whose choices are the decision's
indices ``0 .. k-1``; a trial's indices become a candidate through
``spaces.candidate_of_indices`` (tokens first, then edge bits, as
``np.concatenate(space.encode(c))``). ``propose(n)`` asks ``n`` trials;
``observe`` tells them (None reward: ``TrialState.FAIL``). A trial the space
rejects (``decode`` raises ValueError) is told FAIL and asked again, at most
``MAX_INVALID`` times in a row.

The project's records are the source of truth: ``save`` writes every trial
(parameters, values, state, the sampler's per-trial attributes, asked but not
yet told ones as RUNNING) and the samplers' random states to one JSON file;
``restore`` rebuilds the study with ``optuna.trial.create_trial`` and
``study.add_trial`` so that a resumed search proposes exactly what an
uninterrupted one would.

Constraints (hard mode with bounds): the loop hands the finished records to
``observe_records``; each bound gives one Optuna constraint value
``metric / bound - 1`` (<= 0 is feasible), which TPE and NSGA-II use through
``constraints_func``. ``NSGA2Searcher`` maximises validation accuracy and
minimises one cost (``PARETO_COSTS``), read from the record's metrics by
``pareto_vector``.

Optuna is imported inside the functions that need it (it is only needed for
these two searchers).
"""
import json
import os
import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from autodl_design import critic, records
from autodl_design.config import Config, ConstraintConfig
from autodl_design.interfaces import Candidate, SearchSpace
from autodl_design.search import outcome
from autodl_design.spaces import candidate_of_indices, decision_indices, num_token_decisions

MAX_INVALID = 100  # rejected trials in a row before propose gives up
PARETO_COSTS = critic.COST_METRICS  # cost name -> metric (one table, the critic's)
CONSTRAINTS_KEY = "constraints"  # Optuna's system attribute holding a trial's constraint values
# --searcher tpe's sampler settings (the tries are in docs/nb201.md) and NSGA-II's generation size.
TPE_SETTINGS = {"n_startup_trials": 10, "multivariate": True, "group": False,
                "constant_liar": False}
NSGA2_POPULATION = 20


def _optuna():
    """The optuna module, with its per-trial log lines silenced."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def violations(metrics: Mapping, constraints: ConstraintConfig) -> List[float]:
    """Optuna constraint values of one record: ``metric / bound - 1`` per set bound (<= 0 feasible).

    A bounded metric that was not measured counts as violated by 1.0 (twice the bound).

    Returns:
      list [B], B = ``len(constraints.bounds())``.
    """
    out = []
    for name, bound in constraints.bounds().items():
        value = metrics.get(name)
        out.append(1.0 if value is None else float(value) / float(bound) - 1.0)
    return out


def pareto_vector(record: Mapping, cost: str,
                  infeasible_reward: float) -> Optional[Tuple[float, float]]:
    """(validation accuracy, cost) of a finished record, or None when it cannot be ranked.

    An untrained record judged infeasible (hard mode) counts with accuracy
    ``infeasible_reward``; a failed record, or one whose cost was not
    measured, gives None.

    Args:
      record: a trial record (``status``, ``metrics``).
      cost: a key of ``PARETO_COSTS``.
      infeasible_reward: the accuracy given to untrained infeasible records.
    """
    metrics = record.get("metrics") or {}
    value = metrics.get(PARETO_COSTS[cost])
    if outcome.learning_reward(record) is None or value is None:
        return None
    acc = metrics.get("val_accuracy")
    return (float(infeasible_reward if acc is None else acc), float(value))


def _rng_state(rng: np.random.RandomState) -> List:
    """A RandomState's state as JSON data: [name, keys uint32 [624] as ints, pos, has_gauss,
    cached_gaussian]."""
    name, keys, pos, has_gauss, gauss = rng.get_state()
    return [name, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)]


def _set_rng_state(rng: np.random.RandomState, state: Sequence) -> None:
    """Sets ``rng`` to a state from ``_rng_state``."""
    name, keys, pos, has_gauss, gauss = state
    rng.set_state((name, np.asarray(keys, np.uint32), pos, has_gauss, gauss))


class _OptunaSearcher:
    """Ask-and-tell over one in-memory Optuna study; subclasses choose the sampler.

    Args:
      space: any ``SearchSpace``.
      seed: the sampler's seed.
      constraints: the bounds; in hard mode with bounds they reach the sampler
        as Optuna constraints (through ``observe_records``).
    """

    STATE_FILE = "optuna_searcher.json"
    DIRECTIONS: Tuple[str, ...] = ("maximize",)

    def __init__(self, space: SearchSpace, seed: int,
                 constraints: Optional[ConstraintConfig] = None):
        self.space = space
        self.seed = int(seed)
        self.constraints = constraints if constraints is not None else ConstraintConfig()
        self.constrained = self.constraints.mode == "hard" and bool(self.constraints.bounds())
        self.names = [d.name for d in space.decisions()]
        self.num_tokens = num_token_decisions(space)
        optuna = _optuna()
        self.distributions = {d.name: optuna.distributions.CategoricalDistribution(
            list(range(len(d.choices)))) for d in space.decisions()}
        self.step = 0
        self.pending: List[Tuple[int, Tuple[int, ...]]] = []  # asked, not told: (number, indices)
        self._violations: Dict[int, List[float]] = {}  # trial number -> constraint values
        self.study = self._new_study()

    def _new_study(self):
        """An empty in-memory study with a freshly seeded sampler."""
        optuna = _optuna()
        with warnings.catch_warnings():  # constraints_func is flagged experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = self._make_sampler(self._constraint_values if self.constrained else None)
        return optuna.create_study(directions=list(self.DIRECTIONS), sampler=sampler)

    def _make_sampler(self, constraints_func):
        """The Optuna sampler (``constraints_func`` None without hard bounds)."""
        raise NotImplementedError

    def _constraint_values(self, trial) -> List[float]:
        """Optuna's ``constraints_func``: the values stored by ``_tell`` just before ``tell``."""
        return self._violations.pop(trial.number)

    def _rngs(self) -> Dict[str, np.random.RandomState]:
        """The sampler's random states (Optuna 4.1 keeps them in ``_rng`` attributes)."""
        sampler = self.study.sampler
        return {"sampler": sampler._rng.rng, "random_sampler": sampler._random_sampler._rng.rng}

    def propose(self, n: int) -> List[Candidate]:
        """The next ``n`` candidates, one asked trial each."""
        return [self._ask() for _ in range(n)]

    def _ask(self) -> Candidate:
        """One asked trial's candidate; rejected ones are told FAIL and asked again.

        Raises:
          RuntimeError: the space rejected ``MAX_INVALID`` trials in a row.
        """
        optuna = _optuna()
        for _ in range(MAX_INVALID):
            trial = self.study.ask(self.distributions)
            try:
                cand = candidate_of_indices(self.space, [trial.params[k] for k in self.names],
                                            self.num_tokens)
            except ValueError:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            self.pending.append((trial.number, decision_indices(self.space, cand)))
            return cand
        raise RuntimeError("the %s space rejected %d proposals in a row"
                           % (self.space.name, MAX_INVALID))

    def observe(self, candidates: Sequence[Candidate], rewards: Sequence[Optional[float]]):
        """Tells the rewards (None: failed) of ``candidates``; without constraint values."""
        for cand, r in zip(candidates, rewards):
            self._tell(cand, None if r is None else [float(r)], [])
        self.step += 1

    def observe_records(self, candidates: Sequence[Candidate], recs: Sequence[Mapping]):
        """Tells the finished records of ``candidates`` (same order): reward and constraint values."""
        for cand, rec in zip(candidates, recs):
            r = outcome.learning_reward(rec)
            self._tell(cand, None if r is None else [float(r)], self._record_violations(rec))
        self.step += 1

    def _record_violations(self, rec: Mapping) -> List[float]:
        """The record's constraint values [B] (``violations``), [] without hard bounds."""
        return violations(rec.get("metrics") or {}, self.constraints) if self.constrained else []

    def _tell(self, cand: Candidate, values: Optional[List[float]], cons: List[float]) -> None:
        """Tells the oldest pending trial of ``cand``, or adds a finished trial for it."""
        optuna = _optuna()
        key = decision_indices(self.space, cand)
        number = next((n for n, k in self.pending if k == key), None)
        if number is None:  # not asked by this searcher: add it as a finished trial
            self.study.add_trial(self._frozen(key, values, cons))
            return
        self.pending.remove((number, key))
        if values is None:
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
            return
        if self.constrained:
            self._violations[number] = cons
        self.study.tell(number, values)

    def _frozen(self, key: Tuple[int, ...], values: Optional[List[float]], cons: List[float]):
        """A finished FrozenTrial of decision indices ``key`` (FAIL when ``values`` is None)."""
        optuna = _optuna()
        state = optuna.trial.TrialState
        return optuna.trial.create_trial(
            state=state.FAIL if values is None else state.COMPLETE, values=values,
            params=dict(zip(self.names, key)), distributions=self.distributions,
            system_attrs={CONSTRAINTS_KEY: cons} if self.constrained and values else None)

    def save(self, folder: str):
        """Writes every trial and the random states to ``folder/optuna_searcher.json``."""
        os.makedirs(folder, exist_ok=True)
        trials = [{"number": t.number, "state": t.state.name,
                   "params": [t.params[k] for k in self.names] if t.params else None,
                   "values": t.values, "system_attrs": t.system_attrs}
                  for t in self.study.get_trials(deepcopy=False)]
        records.atomic_write_json(os.path.join(folder, self.STATE_FILE), {
            "step": self.step, "pending": [[n, list(k)] for n, k in self.pending],
            "trials": trials, "rng": {k: _rng_state(v) for k, v in self._rngs().items()}})

    def restore(self, folder: str):
        """Rebuilds the study from ``save``'s file (``create_trial`` + ``add_trial``)."""
        optuna = _optuna()
        with open(os.path.join(folder, self.STATE_FILE)) as f:
            state = json.load(f)
        self.study = self._new_study()
        for t in state["trials"]:
            self.study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState[t["state"]], values=t["values"],
                params=dict(zip(self.names, t["params"])) if t["params"] else None,
                distributions=self.distributions if t["params"] else None,
                system_attrs=t["system_attrs"]))
        for name, rng in self._rngs().items():
            _set_rng_state(rng, state["rng"][name])
        self.step = state["step"]
        self.pending = [(n, tuple(k)) for n, k in state["pending"]]
        self._violations = {}


class TPESearcher(_OptunaSearcher):
    """Optuna's Tree-structured Parzen Estimator (``TPESampler``), maximising the reward.

    Args:
      space, seed, constraints: see ``_OptunaSearcher``.
      n_startup_trials: random trials before TPE models the results.
      multivariate: one joint model over all decisions (Falkner et al. 2018's BOHB kernel).
      group: model each group of decisions that always appear together separately.
      constant_liar: asked but unfinished trials count as bad, so a batch spreads out.
    """

    def __init__(self, space: SearchSpace, seed: int,
                 constraints: Optional[ConstraintConfig] = None, n_startup_trials: int = 10,
                 multivariate: bool = True, group: bool = False, constant_liar: bool = False):
        self.options = {"n_startup_trials": int(n_startup_trials),
                        "multivariate": bool(multivariate), "group": bool(group),
                        "constant_liar": bool(constant_liar)}
        super().__init__(space, seed, constraints)

    def _make_sampler(self, constraints_func):
        optuna = _optuna()
        return optuna.samplers.TPESampler(seed=self.seed, constraints_func=constraints_func,
                                          warn_independent_sampling=False, **self.options)


class NSGA2Searcher(_OptunaSearcher):
    """Optuna's NSGA-II (``NSGAIISampler``): maximise validation accuracy, minimise one cost.

    Learns only from records (``observe_records``: the loop passes them); the
    front of what it has been told is ``front()``.

    Args:
      space, seed, constraints: see ``_OptunaSearcher``.
      cost: a key of ``PARETO_COSTS`` (latency, params or flops).
      population_size: NSGA-II's generation size.
    """

    DIRECTIONS = ("maximize", "minimize")

    def __init__(self, space: SearchSpace, seed: int, cost: str,
                 constraints: Optional[ConstraintConfig] = None, population_size: int = 20):
        if cost not in PARETO_COSTS:
            raise ValueError("unknown Pareto cost %r: use %s" % (cost, ", ".join(PARETO_COSTS)))
        self.cost = cost
        self.population_size = int(population_size)
        super().__init__(space, seed, constraints)

    def _make_sampler(self, constraints_func):
        optuna = _optuna()
        return optuna.samplers.NSGAIISampler(population_size=self.population_size,
                                             seed=self.seed, constraints_func=constraints_func)

    def observe(self, candidates: Sequence[Candidate], rewards: Sequence[Optional[float]]):
        """Not enough for two objectives: NSGA-II needs the records (``observe_records``)."""
        raise TypeError("nsga2 learns from records (accuracy and %s): call observe_records"
                        % self.cost)

    def observe_records(self, candidates: Sequence[Candidate], recs: Sequence[Mapping]):
        """Tells (validation accuracy, cost) of each record; failed ones as FAIL."""
        for cand, rec in zip(candidates, recs):
            vec = pareto_vector(rec, self.cost, self.constraints.infeasible_reward)
            self._tell(cand, None if vec is None else list(vec), self._record_violations(rec))
        self.step += 1

    def front(self) -> List[Tuple[Tuple[int, ...], Tuple[float, float]]]:
        """The non-dominated told trials: (decision indices, (accuracy, cost)), by cost."""
        best = self.study.best_trials
        if self.constrained:
            best = [t for t in best if all(v <= 0 for v in t.system_attrs[CONSTRAINTS_KEY])]
        return sorted(((tuple(t.params[k] for k in self.names), tuple(t.values))
                       for t in best), key=lambda p: (p[1][1], -p[1][0]))


def pareto_cost(config: Config) -> str:
    """The cost NSGA-II minimises: ``config.constraints.pareto_cost`` (``--pareto_cost``).

    Raises:
      ValueError: the objective is not pareto or no cost is named.
    """
    cost = config.constraints.pareto_cost
    if config.constraints.objective != "pareto" or not cost:
        raise ValueError("--searcher nsga2 needs --objective pareto and --pareto_cost "
                         "latency|params|flops")
    return cost


def make_optuna_searcher(config: Config, space: SearchSpace):
    """``--searcher tpe`` (TPE_SETTINGS) or ``--searcher nsga2`` over ``space``."""
    if config.search.searcher == "tpe":
        return TPESearcher(space, config.search.seed, config.constraints, **TPE_SETTINGS)
    return NSGA2Searcher(space, config.search.seed, pareto_cost(config), config.constraints,
                         population_size=NSGA2_POPULATION)
