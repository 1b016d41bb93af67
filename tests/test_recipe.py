"""The recipe decisions (autodl_design/recipe.py): file format, validation, the RecipeSpace."""
import json

import numpy as np
import pytest

from autodl_design import recipe
from autodl_design.arch import Architecture
from autodl_design.config import TrainerConfig
from autodl_design.spaces import CellSpace

OPS = ("conv_3x3", "maxpool_3x3", "conv_1x1")


def _space(raw, num_nodes=3):
    return recipe.RecipeSpace(CellSpace(num_nodes, OPS), recipe.parse_decisions(raw))


@pytest.mark.parametrize("raw, words", [
    ({"widht_mult": [1]}, "unknown decision 'widht_mult'"),
    ({"depth": []}, "non-empty list"),
    ({"depth": [1, 1]}, "twice"),
    ({"resolution": [4]}, ">= 8"),
    ({"learning_rate": [0.1, 0]}, "learning_rate choice 0 must be > 0"),
    ({"optimizer": ["sgd", "lion"]}, "'lion' is not one of sgd, adam, rmsprop"),
    ({"dropout": [1.0]}, "in [0, 1)"),
    ({"depth": [1.5]}, "not an integer"),
    ({"batch_size": [True]}, "not an integer"),
    ([1, 2], "JSON object"),
])
def test_bad_decisions_name_the_problem(raw, words):
    with pytest.raises(recipe.SearchSpaceError, match=None) as e:
        recipe.parse_decisions(raw)
    assert words in str(e.value)


def test_load_file_errors_name_the_file(tmp_path):
    p = tmp_path / "s.json"
    p.write_text("{not json")
    with pytest.raises(recipe.SearchSpaceError, match="s.json is not valid JSON"):
        recipe.load_search_space(str(p))
    with pytest.raises(recipe.SearchSpaceError, match="cannot read"):
        recipe.load_search_space(str(tmp_path / "missing.json"))
    p.write_text(json.dumps({"depth": [1, 2], "cell": {"normal": 3}}))
    with pytest.raises(recipe.SearchSpaceError, match="\"cell\" must be"):
        recipe.load_search_space(str(p))


def test_resolution_above_the_images_is_refused():
    decisions = recipe.parse_decisions({"resolution": [16, 32]})
    recipe.check_resolutions(decisions, 32)
    with pytest.raises(recipe.SearchSpaceError, match=r"resolution \[32\] is larger .* 28"):
        recipe.check_resolutions(decisions, 28)


def test_apply_maps_every_decision_to_the_trainer_settings():
    r = recipe.Recipe.from_dict({"width_mult": 0.5, "depth": 2, "resolution": 16,
                                 "learning_rate": 0.05, "weight_decay": 0.0,
                                 "optimizer": "adam", "batch_size": 32, "grad_clip": 5,
                                 "dropout": 0.2})
    c = r.apply(TrainerConfig(width=10, num_cells=1))
    assert (c.width, c.num_cells, c.resolution, c.lr_max, c.weight_decay, c.optimizer,
            c.train_batch_size, c.grad_clip, c.dropout) == (5, 2, 16, 0.05, 0.0, "adam",
                                                           32, 5.0, 0.2)
    assert recipe.Recipe().apply(TrainerConfig()) == TrainerConfig()
    assert recipe.Recipe.from_dict({"width_mult": 0.01}).apply(TrainerConfig(width=8)).width == 1


def test_space_round_trips_and_hash_covers_the_recipe():
    space = _space({"width_mult": [0.5, 1.0], "learning_rate": [0.01, 0.1, 0.3]})
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        c = space.sample(rng)
        tokens, adjvec = space.encode(c)
        assert tokens.shape == (2 * 3 + 2,) and adjvec.shape == (2 * 3,)
        assert space.decode(tokens, adjvec) == c
        back = space.from_dict(json.loads(json.dumps(c.to_dict())))
        assert back == c and back.hash() == c.hash()
        seen.add(c.recipe.values)
    assert len(seen) == 6
    c = space.sample(rng)
    other = recipe.RecipeCandidate(c.arch, recipe.Recipe(
        tuple((n, v if n != "learning_rate" else (0.3 if v != 0.3 else 0.01))
              for n, v in c.recipe.values)))
    assert other.hash() != c.hash()
    names = [d.name for d in space.decisions()]
    assert names[:6] == ["normal.op.%d" % k for k in range(3)] + \
        ["reduction.op.%d" % k for k in range(3)]
    assert names[6:8] == ["width_mult", "learning_rate"]
    assert len(names) == 6 + 2 + 6


def test_mutate_changes_exactly_one_decision():
    space = _space({"width_mult": [0.5, 1.0], "depth": [1], "optimizer": list(recipe.OPTIMIZERS)})
    rng = np.random.default_rng(1)
    recipe_moves = 0
    for _ in range(200):
        c = space.sample(rng)
        m = space.mutate(c, rng)
        t0, a0 = space.encode(c)
        t1, a1 = space.encode(m)
        changed = int((t0 != t1).sum() + (a0 != a1).sum())
        assert changed == 1
        recipe_moves += int((t0[6:] != t1[6:]).any())
        assert dict(m.recipe.values)["depth"] == 1  # a single choice never moves
    assert 20 < recipe_moves < 100  # 2 of 14 movable decisions are the recipe's


def test_fixed_cell_space():
    arch = CellSpace(3, OPS).sample(np.random.default_rng(2))
    space = recipe.RecipeSpace(None, recipe.parse_decisions({"learning_rate": [0.01, 0.1]}),
                               fixed_cell=arch)
    c = space.sample(np.random.default_rng(0))
    assert c.arch is arch
    tokens, adjvec = space.encode(c)
    assert tokens.shape == (1,) and adjvec.shape == (0,)
    assert space.mutate(c, np.random.default_rng(0)).recipe != c.recipe
    other = CellSpace(3, OPS).sample(np.random.default_rng(3))
    d = recipe.RecipeCandidate(other, c.recipe).to_dict()
    with pytest.raises(ValueError, match="fixed cell"):
        space.from_dict(d)


def test_split_candidate_reads_plain_architectures_too():
    arch = CellSpace(3, OPS).sample(np.random.default_rng(4))
    a, r = recipe.split_candidate(arch.to_dict())
    assert a == arch and r == recipe.Recipe()
    a, r = recipe.split_candidate(dict(arch.to_dict(), recipe={"depth": 2}))
    assert r.get("depth") == 2
    assert isinstance(Architecture.from_dict(dict(arch.to_dict(), recipe={})), Architecture)
