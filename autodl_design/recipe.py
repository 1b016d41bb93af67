"""Search decisions beyond the cell: network scale and training recipe, read from a JSON file.

A search-space file (``--search_space FILE.json``) is a JSON object; each key
names a decision and lists its choices (a categorical choice over the listed
values)::

    {"width_mult": [0.5, 0.75, 1.0], "depth": [1, 2], "resolution": [16, 28],
     "learning_rate": [0.05, 0.1], "optimizer": ["sgd", "adam"]}

The key ``"cell"`` (optional) is either ``"search"`` (the default: the cell
is searched as without the file) or an architecture object (the cell is
fixed and only the listed decisions are searched).

A candidate of such a space is a ``RecipeCandidate``: an ``Architecture``
and the value of every decision. Its JSON form is the architecture's with a
``"recipe"`` object added, e.g. ``{"normal": ..., "reduction": ...,
"recipe": {"width_mult": 0.5, "depth": 2}}``; ``Recipe.apply`` turns the
recipe into the ``TrainerConfig`` the candidate is trained with, in one place.
"""
import dataclasses
import hashlib
import json
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from autodl_design.arch import Architecture
from autodl_design.config import TrainerConfig
from autodl_design.interfaces import Decision
from autodl_design.spaces import CellSpace

SCALE_DECISIONS: Tuple[str, ...] = ("width_mult", "depth", "resolution")
TRAINING_DECISIONS: Tuple[str, ...] = ("learning_rate", "weight_decay", "optimizer",
                                       "batch_size", "grad_clip", "dropout")
RECIPE_DECISIONS: Tuple[str, ...] = SCALE_DECISIONS + TRAINING_DECISIONS
OPTIMIZERS: Tuple[str, ...] = ("sgd", "adam", "rmsprop")
MIN_RESOLUTION = 8


class SearchSpaceError(ValueError):
    """A search-space file or a recipe that cannot be used; the message names the problem."""


def _number(name: str, v: Any, kind: type) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or (kind is int and float(v) != int(v)):
        raise SearchSpaceError("%s choice %r is not %s"
                               % (name, v, "an integer" if kind is int else "a number"))
    return int(v) if kind is int else float(v)


def check_value(name: str, v: Any) -> Any:
    """The value ``v`` of decision ``name``, normalised (int/float/str); raises SearchSpaceError.

    The resolution is only checked against ``MIN_RESOLUTION`` here; the
    images' side is checked by ``check_resolutions`` once the data is known.
    """
    if name == "optimizer":
        if v not in OPTIMIZERS:
            raise SearchSpaceError("optimizer choice %r is not one of %s"
                                   % (v, ", ".join(OPTIMIZERS)))
        return v
    kind = int if name in ("depth", "resolution", "batch_size") else float
    x = _number(name, v, kind)
    rules = {"width_mult": (x > 0, "> 0"), "depth": (x >= 1, ">= 1"),
             "resolution": (x >= MIN_RESOLUTION, ">= %d" % MIN_RESOLUTION),
             "learning_rate": (x > 0, "> 0"), "weight_decay": (x >= 0, ">= 0"),
             "batch_size": (x >= 1, ">= 1"), "grad_clip": (x >= 0, ">= 0 (0 = off)"),
             "dropout": (0 <= x < 1, "in [0, 1)")}
    ok, need = rules[name]
    if not ok:
        raise SearchSpaceError("%s choice %r must be %s" % (name, v, need))
    return x


def parse_decisions(raw: Dict[str, Any]) -> Tuple[Decision, ...]:
    """The recipe decisions of a search-space object (the ``"cell"`` key excluded).

    Args:
      raw: the file's JSON object.

    Returns:
      one ``Decision`` per listed name, in ``RECIPE_DECISIONS`` order.

    Raises:
      SearchSpaceError: an unknown name, an empty or duplicated choice list,
        or a value outside its range.
    """
    if not isinstance(raw, dict):
        raise SearchSpaceError("a search space must be a JSON object of decision: [choices], "
                               "got %s" % type(raw).__name__)
    unknown = sorted(set(raw) - set(RECIPE_DECISIONS) - {"cell"})
    if unknown:
        raise SearchSpaceError("unknown decision %s: use %s (and \"cell\")"
                               % (", ".join(map(repr, unknown)), ", ".join(RECIPE_DECISIONS)))
    out = []
    for name in RECIPE_DECISIONS:
        if name not in raw:
            continue
        choices = raw[name]
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError("decision %r needs a non-empty list of choices, got %r"
                                   % (name, choices))
        values = tuple(check_value(name, v) for v in choices)
        if len(set(values)) != len(values):
            raise SearchSpaceError("decision %r lists a choice twice: %r" % (name, choices))
        out.append(Decision(name, values))
    return tuple(out)


def parse_cell(raw: Dict[str, Any]) -> Optional[Architecture]:
    """The fixed cell of a search-space object, or None when the cell is searched."""
    cell = raw.get("cell", "search") if isinstance(raw, dict) else "search"
    if cell == "search":
        return None
    try:
        return Architecture.from_dict(cell)
    except ValueError as e:
        raise SearchSpaceError("\"cell\" must be \"search\" or an architecture: %s" % e) from None


def load_search_space(path: str) -> Tuple[Tuple[Decision, ...], Optional[Architecture]]:
    """(decisions, fixed cell or None) of a search-space file; SearchSpaceError naming the problem."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as e:
        raise SearchSpaceError("cannot read --search_space %s: %s" % (path, e.strerror)) from None
    except json.JSONDecodeError as e:
        raise SearchSpaceError("--search_space %s is not valid JSON: %s" % (path, e)) from None
    try:
        decisions, cell = parse_decisions(raw), parse_cell(raw)
    except SearchSpaceError as e:
        raise SearchSpaceError("--search_space %s: %s" % (path, e)) from None
    if not decisions:
        raise SearchSpaceError("--search_space %s lists no decision: list at least one of %s"
                               % (path, ", ".join(RECIPE_DECISIONS)))
    return decisions, cell


def space_to_dict(decisions: Sequence[Decision], cell: Optional[Architecture]) -> Dict[str, Any]:
    """The search-space object of ``decisions`` and ``cell``, normalised (plain JSON data).

    ``parse_decisions`` and ``parse_cell`` read it back; it is what a run
    keeps in its config (``SearchConfig.search_space``) and ``search_space.json``.
    """
    out: Dict[str, Any] = {d.name: list(d.choices) for d in decisions}
    out["cell"] = "search" if cell is None else cell.to_dict()
    return out


def check_resolutions(decisions: Sequence[Decision], image_side: int) -> None:
    """Raises SearchSpaceError if a resolution choice is larger than the images' side."""
    for d in decisions:
        if d.name == "resolution":
            big = [r for r in d.choices if r > image_side]
            if big:
                raise SearchSpaceError("resolution %s is larger than the dataset's %d-pixel "
                                       "images: list sides <= %d" % (big, image_side, image_side))


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The values of a candidate's recipe decisions (only the decided ones).

    Attributes:
      values: (name, value) pairs in ``RECIPE_DECISIONS`` order.
    """
    values: Tuple[Tuple[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Recipe":
        """Validates names and values; raises SearchSpaceError."""
        if not isinstance(d, dict):
            raise SearchSpaceError("a recipe must be a JSON object, got %r" % (d,))
        unknown = sorted(set(d) - set(RECIPE_DECISIONS))
        if unknown:
            raise SearchSpaceError("unknown recipe decision %s: use %s"
                                   % (", ".join(map(repr, unknown)), ", ".join(RECIPE_DECISIONS)))
        return cls(tuple((n, check_value(n, d[n])) for n in RECIPE_DECISIONS if n in d))

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.values)

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.values).get(name, default)

    def apply(self, config: TrainerConfig) -> TrainerConfig:
        """The trainer settings of this recipe: ``config`` with the decided values replaced.

        ``width_mult`` scales ``config.width`` (rounded, at least 1 channel);
        ``depth`` sets ``num_cells`` (cells per stage); ``resolution`` sets
        ``resolution`` (input side; 0 = as made); ``learning_rate`` sets
        ``lr_max``; ``batch_size`` sets ``train_batch_size``; the others keep
        their names.
        """
        v = dict(self.values)
        changes: Dict[str, Any] = {}
        if "width_mult" in v:
            changes["width"] = max(1, int(round(config.width * v["width_mult"])))
        renamed = {"depth": "num_cells", "learning_rate": "lr_max",
                   "batch_size": "train_batch_size"}
        for name in RECIPE_DECISIONS:
            if name in v and name != "width_mult":
                changes[renamed.get(name, name)] = v[name]
        return dataclasses.replace(config, **changes)


def split_candidate(d: Dict[str, Any]) -> Tuple[Architecture, Recipe]:
    """(architecture, recipe) of a candidate's JSON form; the recipe is empty without ``"recipe"``."""
    return Architecture.from_dict(d), Recipe.from_dict(d.get("recipe", {}))


class RecipeCandidate:
    """A cell architecture with the value of every recipe decision (a ``Candidate``)."""

    def __init__(self, arch: Architecture, recipe: Recipe):
        self.arch = arch
        self.recipe = recipe

    def hash(self) -> str:
        """The architecture's hash (isomorphic cells equal) combined with the recipe's values."""
        text = json.dumps([self.arch.hash(), list(map(list, self.recipe.values))])
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> Dict[str, Any]:
        d = self.arch.to_dict()
        d["recipe"] = self.recipe.to_dict()
        return d

    def to_json(self) -> str:
        """Readable JSON: ``Architecture.to_json`` (one matrix row per line) with the recipe."""
        text = self.arch.to_json().rstrip()[:-1].rstrip()  # without the closing brace
        return text + ',\n  "recipe": %s\n}\n' % json.dumps(self.recipe.to_dict())

    def describe(self) -> str:
        values = ", ".join("%s=%s" % kv for kv in self.recipe.values)
        return "%s\nrecipe: %s" % (self.arch.describe(), values or "(default)")

    def __eq__(self, other):
        return (isinstance(other, RecipeCandidate) and self.arch == other.arch
                and self.recipe == other.recipe)

    def __hash__(self):
        return hash((self.arch, self.recipe))


class RecipeSpace:
    """The cell space (or one fixed cell) with recipe decisions after the cells.

    Controller vectors: ``tokens`` int32 [T + R] = the cell's op tokens (T =
    2N; none when the cell is fixed) then one choice index per recipe
    decision (R, in ``decisions`` order); ``adjvec`` int32 [A] = the cell's
    edge bits (A = 0 when the cell is fixed). ``decisions()`` lists the cell's
    op decisions, the recipe decisions, then the edge decisions (tokens first,
    then bits, as every space).

    Args:
      cells: the cell space searched, or None with ``fixed_cell``.
      recipe: the recipe decisions (``parse_decisions``), at least one.
      fixed_cell: the one architecture of every candidate, or None.
    """

    name = "recipe"

    def __init__(self, cells: Optional[CellSpace], recipe: Sequence[Decision],
                 fixed_cell: Optional[Architecture] = None):
        if (cells is None) == (fixed_cell is None):
            raise ValueError("give either a cell space or a fixed cell")
        if not recipe:
            raise ValueError("a recipe space needs at least one recipe decision")
        self.cells = cells
        self.fixed_cell = fixed_cell
        self.recipe = tuple(recipe)

    def decisions(self) -> List[Decision]:
        cell = list(self.cells.decisions()) if self.cells else []
        ops = [d for d in cell if ".op." in d.name]
        edges = [d for d in cell if ".op." not in d.name]
        return ops + list(self.recipe) + edges

    def _num_cell_tokens(self) -> int:
        return 2 * self.cells.num_nodes if self.cells else 0

    def sample(self, rng: np.random.Generator) -> RecipeCandidate:
        """The cell as ``CellSpace.sample`` draws it, then one uniform index per recipe decision."""
        arch = self.cells.sample(rng) if self.cells else self.fixed_cell
        idx = [int(rng.integers(len(d.choices))) for d in self.recipe]
        return RecipeCandidate(arch, self._recipe_of(idx))

    def mutate(self, cand: RecipeCandidate, rng: np.random.Generator) -> RecipeCandidate:
        """One decision changes, chosen uniformly among all decisions with 2+ choices."""
        movable = [k for k, d in enumerate(self.recipe) if len(d.choices) > 1]
        num_cell = len(self.cells.decisions()) if self.cells else 0
        pick = int(rng.integers(num_cell + len(movable)))
        if pick < num_cell:
            return RecipeCandidate(self.cells.mutate(cand.arch, rng), cand.recipe)
        k = movable[pick - num_cell]
        idx = self._indices_of(cand.recipe)
        others = [i for i in range(len(self.recipe[k].choices)) if i != idx[k]]
        idx[k] = others[int(rng.integers(len(others)))]
        return RecipeCandidate(cand.arch, self._recipe_of(idx))

    def encode(self, cand: RecipeCandidate) -> Tuple[np.ndarray, np.ndarray]:
        if self.cells:
            tokens, adjvec = self.cells.encode(cand.arch)
        else:
            tokens, adjvec = np.zeros(0, np.int32), np.zeros(0, np.int32)
        rec = np.asarray(self._indices_of(cand.recipe), np.int32)
        return np.concatenate([np.asarray(tokens, np.int32), rec]), np.asarray(adjvec, np.int32)

    def decode(self, tokens: np.ndarray, adjvec: np.ndarray) -> RecipeCandidate:
        tokens = np.asarray(tokens)
        t = self._num_cell_tokens()
        if tokens.shape != (t + len(self.recipe),):
            raise ValueError("recipe-space tokens must have %d entries, got %s"
                             % (t + len(self.recipe), tokens.tolist()))
        if self.cells:
            arch = self.cells.decode(tokens[:t], adjvec)
        elif np.asarray(adjvec).size:
            raise ValueError("a fixed cell has no edge decisions; got adjvec %s"
                             % np.asarray(adjvec).tolist())
        else:
            arch = self.fixed_cell
        idx = [int(i) for i in tokens[t:]]
        for d, i in zip(self.recipe, idx):
            if not 0 <= i < len(d.choices):
                raise ValueError("choice index %d outside %s's %d choices"
                                 % (i, d.name, len(d.choices)))
        return RecipeCandidate(arch, self._recipe_of(idx))

    def from_dict(self, d: Dict) -> RecipeCandidate:
        arch = self.cells.from_dict(d) if self.cells else Architecture.from_dict(d)
        if not self.cells and arch.hash() != self.fixed_cell.hash():
            raise ValueError("candidate's cell is not this space's fixed cell")
        if not isinstance(d, dict) or "recipe" not in d:
            raise ValueError("a candidate of a recipe space needs a \"recipe\" object")
        recipe = Recipe.from_dict(d["recipe"])
        self._indices_of(recipe)  # every decision present, with a listed value
        return RecipeCandidate(arch, recipe)

    def _recipe_of(self, idx: Sequence[int]) -> Recipe:
        return Recipe(tuple((d.name, d.choices[i]) for d, i in zip(self.recipe, idx)))

    def _indices_of(self, recipe: Recipe) -> List[int]:
        values = dict(recipe.values)
        if set(values) != {d.name for d in self.recipe}:
            raise ValueError("recipe decides %s; this space decides %s"
                             % (sorted(values), [d.name for d in self.recipe]))
        out = []
        for d in self.recipe:
            if values[d.name] not in d.choices:
                raise ValueError("%s=%r is not one of %s" % (d.name, values[d.name],
                                                              list(d.choices)))
            out.append(d.choices.index(values[d.name]))
        return out
