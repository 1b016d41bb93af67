"""The real trainer continues a candidate from its saved weights and optimizer state:
1 epoch, saved, then 1 more equals 2 epochs straight with the same seed (CPU)."""
import dataclasses
import os

import numpy as np
import pytest

from autodl_design.arch import Architecture
from trainer import train
from trainer.continuation import Continuation
from tests.test_train import BASELINE, TINY, random_data

pytestmark = pytest.mark.filterwarnings("ignore:When training, we now always track")


def weights(model):
    return {n: np.array(p.numpy()) for n, p in model.state_dict().items()}


@pytest.mark.parametrize("augment", [False, True])
def test_one_epoch_then_one_more_equals_two_straight(tmp_path, augment):
    arch = Architecture.load(BASELINE)
    config = dataclasses.replace(TINY, early_stop=2)
    data = random_data(n=48, shape=(1, 12, 12))
    data = dataclasses.replace(data, augment=augment) if augment else data
    straight, m_straight = train.fit(arch, config, data, seed=7, on_epoch=lambda e, v: True)
    path = str(tmp_path / "rungs" / "3.state")
    first, _ = train.fit(arch, config, data, seed=7, on_epoch=lambda e, v: True,
                         continuation=Continuation(1, save_state=path))
    assert first["status"] == "ok" and first["epochs"] == 1 and os.path.isfile(path)
    assert [f for f in os.listdir(tmp_path / "rungs")] == ["3.state"]  # no temp file left
    # another seed for the continued half: weights, optimizer and shuffling come from the file
    second, m_second = train.fit(arch, config, data, seed=99, on_epoch=lambda e, v: True,
                                 continuation=Continuation(2, continue_from=path))
    assert second["status"] == "ok" and second["resumed_at_epoch"] == 1
    assert second["epochs"] == 2 and len(second["val_history"]) == 2
    assert second["val_history"][0] == first["val_history"][0] == straight["val_history"][0]
    # exact on CPU: the same weights (BatchNorm statistics included), loss and accuracies
    a, b = weights(m_straight), weights(m_second)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for key in ("train_loss", "val_accuracy", "test_accuracy"):
        assert second[key] == straight[key], key


def test_a_fresh_start_without_the_optimizer_state_differs(tmp_path):
    """The optimizer's momentum is part of the state: dropping it changes the result."""
    arch = Architecture.load(BASELINE)
    config = dataclasses.replace(TINY, early_stop=2)
    data = random_data(n=48, shape=(1, 12, 12))
    path = str(tmp_path / "s.state")
    train.fit(arch, config, data, seed=7, continuation=Continuation(1, save_state=path))
    from autodl_design.backend import paddle
    state = paddle.load(path)
    state["optimizer"] = {}
    paddle.save(state, path)
    straight, m_straight = train.fit(arch, config, data, seed=7)
    _, m_cold = train.fit(arch, config, data, seed=7,
                          continuation=Continuation(2, continue_from=path))
    a, b = weights(m_straight), weights(m_cold)
    assert any(not np.array_equal(a[n], b[n]) for n in a)
