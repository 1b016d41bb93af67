"""One-shot search: the supernet selects exactly a candidate's network; ENAS, DARTS end to end."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from autodl_design import records
from autodl_design.arch import Architecture, Cell
from autodl_design.config import TrainerConfig
from autodl_design.ops import OP_NAMES
from autodl_design.search import oneshot_state
from autodl_design.search.oneshot import FixedSearcher
from autodl_design.search.oneshot_report import kendall_tau
from autodl_design.spaces import CellSpace

from tests.conftest import ROOT, needs_fmnist
from tests.kill import kill_after_records

TINY = ["--trainer_devices=cpu", "--num_nodes=3", "--width=4", "--num_stages=2",
        "--num_cells=1", "--early_stop=1", "--latency_repeats=2", "--batch_size=3",
        "--train_batch_size=64", "--oneshot_epochs=2", "--controller_steps=2",
        "--retrain_top=2"]


def main_py(*args, timeout=300):
    return subprocess.run([sys.executable, "main.py"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def trials(log_dir):
    return records.read_trials(os.path.join(log_dir, "trials.jsonl"))


# ---------------------------------------------------------------- the supernet

def _supernet(width=8, num_stages=2, num_nodes=4, ops=OP_NAMES):
    from autodl_design.backend import paddle
    from trainer.supernet import Supernet
    paddle.seed(1)
    cfg = TrainerConfig(width=width, num_stages=num_stages, num_cells=2, ratio=4)
    return Supernet(cfg, ops, num_nodes, (1, 12, 11), 10), cfg


def test_subnet_forward_equals_the_stand_alone_network_with_copied_weights():
    from autodl_design.backend import paddle
    from trainer.metrics import count
    net, cfg = _supernet()
    space = CellSpace(4, OP_NAMES)
    rng = np.random.default_rng(3)
    x = paddle.to_tensor(rng.standard_normal((5, 1, 12, 11)).astype("float32"))
    # a chain, all sources, and random cells (odd width 11: ceil in reduction cells)
    chain = np.triu(np.ones((4, 4), np.int8), k=1)
    archs = [Architecture(Cell(["conv_5x5"] * 4, chain), Cell(["maxpool_3x3"] * 4, chain)),
             Architecture(Cell(list(OP_NAMES[:4]), np.zeros((4, 4), np.int8)),
                          Cell(list(OP_NAMES[6:10]), np.zeros((4, 4), np.int8)))]
    archs += [space.sample(rng) for _ in range(6)]
    for arch in archs:
        alone = net.subnet(arch)
        n_params = sum(int(np.prod(p.shape)) for p in alone.parameters() if not p.stop_gradient)
        assert n_params == count(arch, cfg, (1, 12, 11), 10)["trainable_params"]
        for mode in ("eval", "train"):
            getattr(net, mode)()
            getattr(alone, mode)()
            a, b = net(x, arch).numpy(), alone(x).numpy()
            assert a.shape == (5, 10)
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_a_subnet_step_trains_only_its_own_ops():
    from autodl_design.backend import paddle
    net, _ = _supernet(num_nodes=3, ops=("conv_1x1", "conv_3x3", "avgpool_3x3"))
    arch = Architecture(Cell(["conv_3x3", "conv_1x1", "conv_3x3"], [[0, 1, 0], [0, 0, 0],
                                                                   [0, 0, 0]]),
                        Cell(["conv_1x1"] * 3, [[0, 1, 1], [0, 0, 1], [0, 0, 0]]))
    x = paddle.to_tensor(np.ones((2, 1, 12, 11), np.float32))
    net.train()
    net(x, arch).sum().backward()
    normal = net.cells[0]
    assert normal.src_ops[0][1].weight.grad is not None          # node 0: conv_3x3
    assert normal.src_ops[0][0].weight.grad is None              # node 0: conv_1x1 unused
    assert normal.inner_ops[0][0].weight.grad is not None        # node 1 <- 0: conv_1x1
    assert normal.src_ops[2][1].weight.grad is not None          # node 2 is a source
    assert normal.compress[1].parameters()[0].grad is None       # node 1 is not a source
    reduction = [c for c in net.cells if c.shape.reduction][0]
    assert reduction.inner_ops[1][0].weight.grad is not None     # node 2 <- 0, 1
    assert reduction.src_ops[2][0].weight.grad is None


def test_the_relaxation_is_the_subnet_at_one_hot_probabilities():
    from autodl_design.backend import paddle
    net, _ = _supernet(num_nodes=3, ops=("conv_1x1", "conv_3x3", "maxpool_3x3"))
    m = np.array([[0, 1, 1], [0, 0, 0], [0, 0, 0]], np.int8)
    arch = Architecture(Cell(["conv_3x3", "maxpool_3x3", "conv_1x1"], m),
                        Cell(["conv_1x1", "conv_3x3", "conv_3x3"], np.zeros((3, 3), np.int8)))
    alphas = {}
    for name, cell in (("normal", arch.normal), ("reduction", arch.reduction)):
        w = np.zeros((3, 3), np.float32)
        w[np.arange(3), [net.ops.index(o) for o in cell.ops]] = 1
        alphas[name] = (paddle.to_tensor(w), paddle.to_tensor(cell.matrix.astype(np.float32)))
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((3, 1, 12, 11)), "float32")
    net.eval()
    np.testing.assert_allclose(net.forward_mixed(x, alphas).numpy(), net(x, arch).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_memory_check_names_the_size_flags():
    from trainer.supernet import SupernetTooLarge, check_fits
    cfg = TrainerConfig(width=8, num_stages=2, num_cells=1)
    small = check_fits(cfg, OP_NAMES, 10, (1, 28, 28), 128, True, 1e9)
    assert 0 < small < 4096
    with pytest.raises(SupernetTooLarge, match="--width, --num_stages, --num_cells, --num_nodes"):
        check_fits(cfg, OP_NAMES, 10, (1, 28, 28), 128, True, small / 2)
    enas = check_fits(cfg, OP_NAMES, 10, (1, 28, 28), 128, False, 1e9)
    assert enas < small  # one path of activations instead of every op


# ---------------------------------------------------------------- pieces

def test_kendall_tau():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 1, 1], [1, 2, 3]) is None
    assert kendall_tau([0.5], [0.7]) is None
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1])


def test_fixed_searcher_proposes_exactly_its_candidates_and_resumes(tmp_path):
    space = CellSpace(3, OP_NAMES)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(5)]
    s = FixedSearcher(archs)
    assert s.propose(3) == archs[:3]
    s.observe(archs[:3], [0.1, 0.2, None])
    s.save(str(tmp_path / "ck"))
    t = FixedSearcher(archs)
    t.restore(str(tmp_path / "ck"))
    assert t.step == 1 and t.propose(3) == archs[3:] and t.propose(1) == []


def test_checkpoint_is_verified(tmp_path):
    log = str(tmp_path)
    assert oneshot_state.latest_checkpoint(log) is None

    def write(folder):
        with open(os.path.join(folder, "a.bin"), "wb") as f:
            f.write(b"weights")
    for epoch in (1, 2):
        oneshot_state.save_checkpoint(log, epoch, write)
    assert sorted(os.listdir(oneshot_state.folder(log))) == ["epoch_0002", "latest.json"]
    ck = oneshot_state.latest_checkpoint(log)
    assert ck["epoch"] == 2
    with open(os.path.join(ck["folder"], "a.bin"), "wb") as f:
        f.write(b"weightz")
    with pytest.raises(oneshot_state.SearchError, match="damaged"):
        oneshot_state.latest_checkpoint(log)


# ---------------------------------------------------------------- end to end

def _check_run(log, method, stdout, retrain_top=2, epochs=2):
    assert "%s epoch %d/%d: loss" % (method, epochs, epochs) in stdout
    assert "best cell normal [" in stdout
    t = trials(log)
    assert sorted(x["index"] for x in t) == list(range(retrain_top))
    for x in t:
        m = x["metrics"]
        assert x["status"] == "ok" and m["epochs"] == 1
        assert 0.0 <= m["oneshot_val_accuracy"] <= 1.0 and 0.0 <= m["val_accuracy"] <= 1.0
        assert m["oneshot_score"] == pytest.approx(m["oneshot_val_accuracy"])  # no bounds
    top = json.load(open(os.path.join(log, "oneshot", "topk.json")))["candidates"]
    assert [c["arch_hash"] for c in top] == [x["arch_hash"] for x in sorted(t, key=lambda x:
                                                                           x["index"])]
    assert [c["oneshot_score"] for c in top] == sorted((c["oneshot_score"] for c in top),
                                                       reverse=True)
    best = json.load(open(os.path.join(log, "best.json")))
    assert best["reward"] == max(x["reward"] for x in t)
    hist = json.load(open(os.path.join(log, "oneshot", "history.json")))
    assert [h["epoch"] for h in hist] == list(range(1, epochs + 1))
    report = open(os.path.join(log, "report", "report.md")).read()
    assert "Kendall tau between one-shot score and stand-alone validation accuracy" in report
    assert os.path.getsize(os.path.join(log, "report", "oneshot.png")) > 1000
    ck = oneshot_state.latest_checkpoint(log)
    assert ck["epoch"] == epochs
    return t


@needs_fmnist
@pytest.mark.parametrize("method", ["enas", "darts"])
def test_oneshot_end_to_end(tiny_fmnist, tmp_path, method):
    log = str(tmp_path / "log")
    r = main_py("--data_path", tiny_fmnist, "--log_dir", log, "--method", method, *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("autodl-design: %s (one-shot, retraining the top 2)" % method)
    _check_run(log, method, r.stdout)
    if method == "enas":
        assert os.path.isfile(os.path.join(log, "oneshot", "epoch_0002", "controller",
                                           "model.pdparams"))
    else:
        assert os.path.isfile(os.path.join(log, "oneshot", "epoch_0002", "arch.pdparams"))


@needs_fmnist
def test_sigkill_then_resume_continues_from_the_checkpoint(tiny_fmnist, tmp_path):
    log = str(tmp_path / "log")
    args = ["--data_path", tiny_fmnist, "--log_dir", log, "--method", "enas", *TINY,
            "--oneshot_epochs=4"]
    proc = subprocess.Popen([sys.executable, "main.py"] + args, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    latest = os.path.join(log, "oneshot", "latest.json")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not os.path.exists(latest):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = json.load(open(latest))["epoch"]
    assert 1 <= done < 4
    r = main_py(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Resuming %s: one-shot phase after epoch %d of 4" % (log, done) in r.stdout
    assert "enas epoch %d/4" % done not in r.stdout  # not redone
    assert "enas epoch %d/4" % (done + 1) in r.stdout
    _check_run(log, "enas", r.stdout, epochs=4)


@needs_fmnist
def test_damaged_checkpoint_on_resume_is_one_line_and_records_intact(tiny_fmnist, tmp_path):
    log = str(tmp_path / "log")
    args = ["--data_path", tiny_fmnist, "--log_dir", log, "--method", "enas", *TINY,
            "--oneshot_epochs=1", "--retrain_top=1"]
    r = main_py(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    os.remove(os.path.join(log, "oneshot", "topk.json"))  # as if killed before the end
    with open(os.path.join(log, "oneshot", "epoch_0001", "supernet.pdparams"), "r+b") as f:
        f.seek(100)
        f.write(b"\x00garbage\x00")
    saved = {n: open(os.path.join(log, n), "rb").read() for n in ("trials.jsonl", "best.json")}
    r = main_py(*args, "--resume")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "damaged" in lines[0] and "supernet.pdparams" in lines[0]
    assert {n: open(os.path.join(log, n), "rb").read() for n in saved} == saved


@pytest.mark.parametrize("extra,message", [
    (["--method=enas", "--retrain_top=0"], "retrain_top"),
    (["--method=darts", "--searcher=random"], "--method darts has its own searcher"),
    (["--method=enas", "--warmup_epochs=6"], "--warmup_epochs must be less than --oneshot_epochs"),
])
def test_bad_flags_are_one_line_exit_2(tmp_path, extra, message):
    r = main_py("--log_dir", str(tmp_path / "log"), *extra)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not os.path.exists(str(tmp_path / "log"))


@needs_fmnist
def test_supernet_too_large_is_one_line_exit_2(tiny_fmnist, tmp_path):
    log = str(tmp_path / "log")
    r = main_py("--data_path", tiny_fmnist, "--log_dir", log, "--method", "darts", *TINY,
                "--width=200000", "--num_nodes=10")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "supernet needs about" in lines[0] and "--width" in lines[0]
    assert trials(log) == []


# ---------------------------------------------------------------- engines on real data

def _config(data_path, log_dir, method, **constraints):
    from autodl_design import config as cfg
    return cfg.Config(
        cfg.DataConfig(data_path=data_path), cfg.AgentConfig(num_nodes=3, ops=OP_NAMES,
                                                             batch_size=4),
        cfg.TrainerConfig(width=4, num_stages=2, num_cells=1, train_batch_size=64),
        cfg.ConstraintConfig(**constraints), cfg.DeviceConfig(),
        cfg.SearchConfig(method=method, log_dir=log_dir, oneshot_epochs=1))


@needs_fmnist
def test_enas_reward_goes_through_the_critic(tiny_fmnist, tmp_path):
    from autodl_design.search.oneshot import Enas
    from trainer.data import load_dataset
    data = load_dataset(tiny_fmnist)
    arch = CellSpace(3, OP_NAMES).sample(np.random.default_rng(0))
    x, y = data.val_images[:40], np.asarray(data.val_labels[:40], np.int64)
    hard = Enas(_config(tiny_fmnist, str(tmp_path), "enas", max_params=1,
                        infeasible_reward=-0.5), data, lambda line: None)
    reward, metrics, v = hard.judge(arch, x, y)
    assert (reward, v.status) == (-0.5, "infeasible") and "val_accuracy" not in metrics
    soft = Enas(_config(tiny_fmnist, str(tmp_path), "enas", max_params=1, mode="soft",
                        soft_beta=-0.07), data, lambda line: None)
    reward, metrics, v = soft.judge(arch, x, y)
    acc = metrics["val_accuracy"]
    assert v.status == "ok" and 0 <= acc <= 1
    assert reward == pytest.approx(acc * metrics["params"] ** -0.07)
    assert acc == soft.accuracy(arch, x, y)


@needs_fmnist
def test_enas_warmup_trains_uniform_subnetworks_without_controller_steps(tiny_fmnist, tmp_path):
    import dataclasses
    from autodl_design.search.oneshot import Enas
    from trainer.data import load_dataset
    config = _config(tiny_fmnist, str(tmp_path), "enas")
    config = dataclasses.replace(config, search=dataclasses.replace(
        config.search, oneshot_epochs=2, warmup_epochs=1, controller_steps=2))
    engine = Enas(config, load_dataset(tiny_fmnist), lambda line: None)
    weights = {k: v.numpy().copy() for k, v in engine.agent.alg.model.state_dict().items()}
    supernet = {k: v.numpy().copy() for k, v in engine.net.state_dict().items()}
    entry = engine.train_epoch()  # epoch 1: warm-up
    assert engine.agent.step == 0 and np.isfinite(entry["train_loss"])
    assert all(np.array_equal(v.numpy(), weights[k])
               for k, v in engine.agent.alg.model.state_dict().items())
    assert any(not np.array_equal(v.numpy(), supernet[k])
               for k, v in engine.net.state_dict().items())
    engine.epoch = 1
    engine.train_epoch()  # epoch 2: the controller learns
    assert engine.agent.step == 2


@needs_fmnist
def test_darts_final_cell_is_the_most_probable(tiny_fmnist, tmp_path):
    from autodl_design.search.oneshot import Darts
    from trainer.data import load_dataset
    engine = Darts(_config(tiny_fmnist, str(tmp_path), "darts"), load_dataset(tiny_fmnist),
                   lambda line: None)
    ops, edges = engine.alpha["normal"]
    w = np.zeros((3, 10), np.float32)
    w[0, 2], w[1, 7], w[2, 0] = 3, 1, 0.5
    e = np.full((3, 3), -2, np.float32)
    e[0, 2], e[1, 2], e[0, 1] = 1.0, 0.1, -0.1  # p = 0.73, 0.52, 0.48
    ops.set_value(w)
    edges.set_value(e)
    cell = engine.derived().normal
    assert cell.ops == (OP_NAMES[2], OP_NAMES[7], OP_NAMES[0])
    assert cell.matrix.tolist() == [[0, 0, 1], [0, 0, 1], [0, 0, 0]]
    pool = engine.final_pool()
    assert pool[0].normal == cell and len(pool) == 20


@needs_fmnist
def test_darts_expected_latency_is_the_table_prediction_at_one_hot(tiny_fmnist, tmp_path):
    from autodl_design.backend import paddle
    from autodl_design.search.oneshot import Darts
    from trainer import profiling
    from trainer.data import load_dataset
    from trainer.latency_table import LatencyTable
    data = load_dataset(tiny_fmnist)
    config = _config(tiny_fmnist, str(tmp_path), "darts", max_latency_ms=1e-3)
    path = str(tmp_path / "T.json")
    profiling.profile(config, data.image_shape, data.num_classes, "cpu", 1, calibration_archs=2,
                      log=lambda line: None).save(path)
    import dataclasses
    config = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer,
                                                                     latency_table=path))
    engine = Darts(config, data, lambda line: None)
    table = LatencyTable.load(path)
    space = CellSpace(3, OP_NAMES)
    rng = np.random.default_rng(5)
    for _ in range(4):
        arch, other = space.sample(rng), space.sample(rng)
        relaxed = {}
        for name, cell in (("normal", arch.normal), ("reduction", arch.reduction)):
            w = np.zeros((3, 10), np.float32)
            w[np.arange(3), [OP_NAMES.index(o) for o in cell.ops]] = 1
            relaxed[name] = (paddle.to_tensor(w), paddle.to_tensor(cell.matrix, "float32"))
        # the rest (stem, head, projections) from `other`: only the nodes are relaxed
        got = float(engine.expected_latency(relaxed, arch))
        want = table.predict(arch, config.trainer, data.image_shape, 10)["latency_ms"]
        assert got == pytest.approx(want, rel=1e-5)
        assert float(engine.expected_latency(relaxed, other)) != pytest.approx(
            table.predict(other, config.trainer, data.image_shape, 10)["latency_ms"], rel=1e-6)
    # a bound below every cell: architecture steps lower the expected latency
    before = float(engine.expected_latency(engine.relaxed(), engine.derived()))
    for _ in range(5):
        engine.arch_step()
    assert engine.last_expected_ms is not None
    assert float(engine.expected_latency(engine.relaxed(), engine.derived())) < before


@needs_fmnist
def test_sigkill_while_retraining_then_resume_keeps_the_records(tiny_fmnist, tmp_path):
    log = str(tmp_path / "log")
    args = ["--data_path", tiny_fmnist, "--log_dir", log, "--method", "enas", *TINY,
            "--oneshot_epochs=1", "--retrain_top=3", "--early_stop=2"]
    kill_after_records([sys.executable, "main.py"] + args, log, 1)
    before = trials(log)
    assert 1 <= len(before) < 3
    r = main_py(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "the one-shot phase is done; retraining its top 3" in r.stdout
    assert "enas epoch" not in r.stdout
    after = trials(log)
    assert sorted(x["index"] for x in after) == [0, 1, 2]
    kept = {x["index"]: x for x in after}
    for x in before:
        assert kept[x["index"]] == x
    assert all("oneshot_score" in x["metrics"] for x in after)
