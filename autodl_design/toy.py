"""A toy objective: cheap synthetic metrics of a candidate (cell and recipe) with a known optimum.

``--evaluator toy`` (or ``ToyEvaluator`` in a test) replaces training by a
formula, so that a searcher can be tried on the real loop, pool, records and
report in seconds. For a candidate of the run's search space:

* cell score ``c`` in [0, 1]: the share of the 2N nodes (normal and
  reduction cell) whose op is the target op (``target_op``: ``conv_3x3``
  when the space offers it, else its first op);
* recipe score ``s_d`` in [0, 1] of each recipe decision ``d`` with ``n``
  choices, whose value is choice number ``i`` (0-based, in the file's order):
  ``1 - |i - n // 2| / max(n // 2, n - 1 - n // 2)`` (1 when ``n`` = 1): a
  peak at the middle choice ``n // 2``, 0 at the farthest end;
* ``val_accuracy = 0.5 + 0.4 * (c + sum_d s_d) / (1 + R)`` for R recipe
  decisions.

The optimum is every node on the target op and every decision on its middle
choice (``optimum_recipe``): 0.9 with a searched cell; with a fixed cell
``c`` is constant and the optimum is the middle of every decision. The
costs grow with the network the recipe describes (w = width_mult, d = depth,
r = resolution; 1, 1 and 28 when not decided; k = nodes on a conv op, e =
edges of both cells)::

    params     = round((1000 + 1000 k + 10 e) * w^2 * d)
    flops      = params * r^2
    latency_ms = flops / 1e6
    memory_mb  = 4 * (params + 64 * w * r^2) / 1e6

Everything is deterministic given the candidate (the seed is ignored); the
bounds gate as with the real trainer (``evaluation.evaluate_candidate``),
and a learning curve over ``early_stop`` epochs lets ``--early_termination
median`` stop candidates.
"""
import dataclasses
from typing import Any, Dict, Optional, Sequence

from autodl_design import evaluation
from autodl_design.arch import Architecture
from autodl_design.config import Config
from autodl_design.interfaces import Decision
from autodl_design.recipe import Recipe, parse_decisions, split_candidate

TOY_IMAGE_SIDE = 28  # the resolution of a candidate that does not decide one
TARGET_OP = "conv_3x3"


def target_op(ops: Sequence[str]) -> str:
    """The op the cell score rewards: ``TARGET_OP`` if ``ops`` offers it, else ``ops[0]``."""
    return TARGET_OP if TARGET_OP in ops or not ops else ops[0]


def peak(index: int, num_choices: int) -> float:
    """The recipe score of choice ``index`` of ``num_choices``: 1 at ``num_choices // 2``."""
    mid = num_choices // 2
    reach = max(mid, num_choices - 1 - mid)
    return 1.0 if reach == 0 else 1.0 - abs(index - mid) / reach


def optimum_recipe(decisions: Sequence[Decision]) -> Dict[str, Any]:
    """The recipe of the toy optimum: the middle choice (``n // 2``) of every decision."""
    return {d.name: d.choices[len(d.choices) // 2] for d in decisions}


def toy_accuracy(arch: Architecture, recipe: Recipe, decisions: Sequence[Decision],
                 ops: Sequence[str]) -> float:
    """``val_accuracy`` of the module docstring.

    Raises:
      ValueError: the recipe does not decide exactly ``decisions`` with listed values.
    """
    values = recipe.to_dict()
    if set(values) != {d.name for d in decisions}:
        raise ValueError("toy objective: recipe decides %s, the space %s"
                         % (sorted(values), [d.name for d in decisions]))
    cell_ops = [op for c in arch.cells for op in c.ops]
    score = sum(op == target_op(ops) for op in cell_ops) / len(cell_ops)
    for d in decisions:
        if values[d.name] not in d.choices:
            raise ValueError("toy objective: %s=%r is not one of %s"
                             % (d.name, values[d.name], list(d.choices)))
        score += peak(d.choices.index(values[d.name]), len(d.choices))
    return 0.5 + 0.4 * score / (1 + len(decisions))


def toy_costs(arch: Architecture, recipe: Recipe) -> Dict[str, Any]:
    """params, flops, latency_ms and memory_mb of the module docstring."""
    w = float(recipe.get("width_mult", 1.0))
    d = int(recipe.get("depth", 1))
    r = int(recipe.get("resolution", TOY_IMAGE_SIDE))
    convs = sum(op.startswith(("conv", "dilated")) for c in arch.cells for op in c.ops)
    edges = int(sum(int(c.matrix.sum()) for c in arch.cells))
    params = int(round((1000 + 1000 * convs + 10 * edges) * w * w * d))
    flops = params * r * r
    return {"params": params, "flops": flops, "latency_ms": flops / 1e6,
            "memory_mb": 4.0 * (params + 64 * w * r * r) / 1e6,
            "latency_source": "toy formula", "memory_source": "toy formula"}


@dataclasses.dataclass
class ToyEvaluator:
    """An ``interfaces.Evaluator`` giving the toy metrics (picklable; nothing to load).

    Attributes:
      config_dict: the run's ``Config.to_dict()`` (search space, ops, bounds, epochs).
    """
    config_dict: Dict
    _config: Optional[Config] = dataclasses.field(default=None, init=False, repr=False,
                                                  compare=False)

    def setup(self, device: str, threads: int) -> None:
        self._config = Config.from_dict(self.config_dict)

    def evaluate(self, candidate: Dict, index: int, seed: int, options: Dict) -> Dict:
        """The toy metrics of ``candidate`` (its JSON form); the seed is not used."""
        config = self._config
        arch, recipe = split_candidate(candidate)
        decisions = parse_decisions(config.search.search_space)
        accuracy = toy_accuracy(arch, recipe, decisions, config.agent.ops)
        on_epoch = None
        if "cull" in options:
            on_epoch = evaluation.median_stopper(options["cull"], options["cull_start_epoch"])

        def train(_):
            epochs = config.trainer.early_stop
            history = []
            for e in range(1, epochs + 1):
                history.append(accuracy * (0.5 + 0.5 * e / epochs))
                if on_epoch is not None and not on_epoch(e, history[-1]):
                    break
            return {"status": "ok", "val_accuracy": history[-1], "epochs": len(history),
                    "stopped_early": len(history) < epochs, "val_history": history}

        return evaluation.evaluate_candidate(arch, config.constraints,
                                             lambda _: toy_costs(arch, recipe), train)
