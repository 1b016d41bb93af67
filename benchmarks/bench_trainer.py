"""Speed of the candidate trainer: training images/s against PyTorch, and seconds per evaluation.

Measures, each in its own fresh process (so the OpenMP runtimes of Paddle and
PyTorch never share a process and thread settings apply from the start):

* training throughput (images/s, batch ``--batch``, random data, SGD with
  Nesterov momentum and weight decay) of the network of examples/baseline.json
  at the cpu preset sizes (width 8, 2 stages, 1 cell; also width 16) on
  28x28x1 and 32x32x3 inputs, for Paddle dygraph (the trainer's mode), Paddle
  ``jit.to_static`` (SOT and full-graph AST) and the same network written in
  PyTorch (torch==2.13.0, requirements-bench.txt), with 1 thread (and 2);
* seconds of one full candidate evaluation (``measure_hardware`` +
  ``train_and_evaluate``) on real Fashion-MNIST for the cpu preset (540
  training images x 3 epochs) and larger candidate budgets, alone and with
  two evaluations running at once (2 trainer workers on 2 cores).

Prints a table and writes benchmarks/results/trainer.json. Run under the
shared lock:  flock /tmp/bench.lock .venv/bin/python benchmarks/bench_trainer.py
"""
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist"

flags.DEFINE_integer("batch", 128, "Training batch size (the trainer's default).")
flags.DEFINE_integer("steps", 15, "Timed training steps per round.")
flags.DEFINE_integer("rounds", 3, "Timed rounds per measurement; the median is reported.")
flags.DEFINE_string("output", os.path.join(ROOT, "benchmarks", "results", "trainer.json"),
                    "JSON results file.")
flags.DEFINE_string("worker", "", "Internal: run one measurement (JSON spec) and print JSON.")
flags.DEFINE_bool("quick", False, "Fewer measurements (1 round, 5 steps) for a smoke test.")
FLAGS = flags.FLAGS


# --------------------------------------------------------------------------- workers

def _set_threads(threads: int):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def _time_steps(step, warmup: int, steps: int, rounds: int, batch: int):
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(batch * steps / (time.perf_counter() - t))
    rates.sort()
    return rates[len(rates) // 2], rates


def _paddle_train(spec):
    import warnings
    warnings.filterwarnings("ignore", message="When training, we now always track")
    import numpy as np
    sys.path.insert(0, ROOT)
    from autodl_design.backend import paddle
    from autodl_design.arch import Architecture
    from autodl_design.config import TrainerConfig
    from trainer.network import build_network
    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(spec["threads"])
    paddle.seed(0)
    shape = tuple(spec["shape"])
    cfg = TrainerConfig(width=spec["width"], num_stages=spec["num_stages"],
                        num_cells=spec["num_cells"])
    arch = Architecture.load(spec["arch"])
    model = build_network(arch, cfg, shape, 10)
    fwd = model
    if spec["mode"] == "to_static_sot":
        fwd = paddle.jit.to_static(model)
    elif spec["mode"] == "to_static_ast":
        fwd = paddle.jit.to_static(model, full_graph=True)
    opt = paddle.optimizer.Momentum(0.05, 0.9, parameters=[p for p in model.parameters()
                                                           if not p.stop_gradient],
                                    use_nesterov=True,
                                    weight_decay=paddle.regularizer.L2Decay(1e-4))
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((spec["batch"],) + shape).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 10, spec["batch"]).astype("int64"))
    model.train()

    def step():
        loss = paddle.nn.functional.cross_entropy(fwd(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)

    t = time.perf_counter()
    step()
    first = time.perf_counter() - t
    rate, rates = _time_steps(step, 2, spec["steps"], spec["rounds"], spec["batch"])
    return {"images_per_second": rate, "rounds": rates, "first_step_seconds": first}


def _torch_conv(cin, cout, kernel, stride=1, dilation=1):
    from torch import nn
    from trainer.walk import same_padding
    kh, kw = kernel
    return nn.Conv2d(cin, cout, kernel, stride=stride,
                     padding=(same_padding(kh, dilation), same_padding(kw, dilation)),
                     dilation=dilation, bias=False)


def _torch_op(name, n, stride):
    from torch import nn
    from autodl_design.ops import OPS
    s = OPS[name]
    kh, kw = s.kernel
    if s.kind == "conv":
        return _torch_conv(n, n, s.kernel, stride, s.dilation)
    if s.kind == "sep":
        return nn.Sequential(_torch_conv(n, n, (1, kw), (1, stride)),
                             _torch_conv(n, n, (kh, 1), (stride, 1)))
    if s.kind == "maxpool":
        return nn.MaxPool2d(s.kernel, stride, (kh // 2, kw // 2))
    return nn.AvgPool2d(s.kernel, stride, (kh // 2, kw // 2), count_include_pad=False)


def _torch_net(arch, cfg, shape, num_classes):
    import torch
    from torch import nn
    from trainer import walk
    conv, op = _torch_conv, _torch_op

    def bn_relu(c):
        return [nn.BatchNorm2d(c, momentum=0.1), nn.ReLU()]

    class Cell(nn.Module):
        def __init__(self, cell, cell_shape):
            super().__init__()
            self.preds = [[] for _ in cell.ops]
            pre, ops = [], []
            for step in walk.cell_steps(cell, cell_shape):     # the layers trainer.network builds
                if step.kind == walk.COMPRESS:
                    pre.append(nn.Sequential(*bn_relu(step.cin), conv(step.cin, step.cout, (1, 1)),
                                             *bn_relu(step.cout)))
                elif step.kind == walk.BNRELU:
                    pre.append(nn.Sequential(*bn_relu(step.cout)))
                elif step.kind == walk.OP:
                    self.preds[step.node] = list(step.inputs)
                    ops.append(op(step.op, step.cout, step.stride))
                elif step.kind == walk.PROJECT:
                    self.outs = list(step.inputs)
                    self.project = conv(step.cin, step.cout, (1, 1))
            self.pre, self.ops = nn.ModuleList(pre), nn.ModuleList(ops)

        def forward(self, x):
            nodes = []
            for j, preds in enumerate(self.preds):
                h = x
                if preds:
                    h = nodes[preds[0]]
                    for i in preds[1:]:
                        h = h + nodes[i]
                nodes.append(self.ops[j](self.pre[j](h)))
            return self.project(torch.cat([nodes[i] for i in self.outs], 1))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = conv(shape[0], cfg.width, (3, 3))
            self.cells = nn.ModuleList(
                Cell(arch.reduction if s.reduction else arch.normal, s)
                for s in walk.cell_shapes(cfg))
            c = walk.cell_shapes(cfg)[-1].cout
            self.head = nn.Sequential(*bn_relu(c), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(c, num_classes))

        def forward(self, x):
            h = self.stem(x)
            for cell in self.cells:
                h = cell(h)
            return self.head(h)

    return Net()


def _torch_train(spec):
    import numpy as np
    import torch
    sys.path.insert(0, ROOT)
    from autodl_design.arch import Architecture
    from autodl_design.config import TrainerConfig
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    shape = tuple(spec["shape"])
    cfg = TrainerConfig(width=spec["width"], num_stages=spec["num_stages"],
                        num_cells=spec["num_cells"])
    model = _torch_net(Architecture.load(spec["arch"]), cfg, shape, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((spec["batch"],) + shape).astype("float32"))
    y = torch.from_numpy(rng.integers(0, 10, spec["batch"]).astype("int64"))
    model.train()
    params = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked"))

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        float(loss)

    t = time.perf_counter()
    step()
    first = time.perf_counter() - t
    rate, rates = _time_steps(step, 2, spec["steps"], spec["rounds"], spec["batch"])
    return {"images_per_second": rate, "rounds": rates, "first_step_seconds": first,
            "params_with_bn_stats": params, "torch": torch.__version__}


def _evaluation(spec):
    import warnings
    warnings.filterwarnings("ignore", message="When training, we now always track")
    sys.path.insert(0, ROOT)
    from autodl_design.backend import paddle
    from autodl_design.arch import Architecture
    from autodl_design.config import TrainerConfig
    from trainer import data as data_lib
    from trainer import metrics, train
    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(spec["threads"])
    data = data_lib.load_dataset(spec["data"])
    cfg = TrainerConfig(width=spec["width"], num_stages=spec["num_stages"],
                        num_cells=spec["num_cells"], early_stop=spec["epochs"],
                        latency_repeats=spec["latency_repeats"])
    arch = Architecture.load(spec["arch"])
    t = time.perf_counter()
    hw = metrics.measure_hardware(arch, cfg, data.image_shape, data.num_classes, seed=0)
    t_hw = time.perf_counter() - t
    result = train.train_and_evaluate(arch, cfg, data, seed=0,
                                      static_graph=spec["static_graph"])
    return {"static_graph": result["static_graph"], "seconds": time.perf_counter() - t,
            "hardware_seconds": t_hw,
            "train_seconds": result["seconds"], "images_per_second": result["images_per_second"],
            "val_accuracy": result["val_accuracy"], "test_accuracy": result["test_accuracy"],
            "status": result["status"], "train_images": int(len(data.train_images)),
            "params": hw["params"], "flops": hw["flops"], "latency_ms": hw["latency_ms"]}


WORKERS = {"paddle": _paddle_train, "torch": _torch_train, "evaluation": _evaluation}


# --------------------------------------------------------------------------- driver

def _launch(spec):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(spec["threads"])
    env["PYTHONPATH"] = ROOT
    env["GLOG_minloglevel"] = "2"
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker",
                             json.dumps(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)


def _collect(proc):
    out, err = proc.communicate()
    lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(err.strip().splitlines()[-3:])
        return {"error": "worker exit %d: %s" % (proc.returncode, tail)}
    return json.loads(lines[-1][len("RESULT "):])


def _run(spec):
    return _collect(_launch(spec))


def _ensure_data(root: str, images_per_class: int) -> str:
    sys.path.insert(0, ROOT)
    from trainer import data as data_lib
    path = os.path.join(root, "fmnist_%d" % images_per_class)
    data_lib.build_dataset("fashion_mnist", FMNIST, path, images_per_class=images_per_class,
                           log=lambda _: None)
    return path


def _throughput(base, quick):
    """Training images/s of every (width, shape, framework, mode, threads); (runs, rows)."""
    from autodl_design.config import SIZE_PRESETS
    cpu = SIZE_PRESETS["cpu"]
    throughput = [(w, shape, kind, mode, threads)
                  for w in (int(cpu["width"]), 16)
                  for shape in ((1, 28, 28), (3, 32, 32))
                  for kind, mode in (("paddle", "dygraph"), ("torch", "eager"))
                  for threads in (1,)]
    if not quick:
        throughput += [(int(cpu["width"]), (1, 28, 28), "paddle", m, 1)
                       for m in ("to_static_sot", "to_static_ast")]
        throughput += [(int(cpu["width"]), (1, 28, 28), k, m, 2)
                       for k, m in (("paddle", "dygraph"), ("torch", "eager"))]
    runs, rows = [], []
    for width, shape, kind, mode, threads in throughput:
        spec = dict(base, kind=kind, mode=mode, width=width, shape=list(shape), threads=threads)
        r = _run(spec)
        runs.append({"spec": spec, "result": r})
        rows.append(("train %s %s w%d %s t%d" % (kind, mode, width, "x".join(map(str, shape)),
                                                threads),
                     "error" if "error" in r else "%7.0f img/s (first step %.2f s)"
                     % (r["images_per_second"], r["first_step_seconds"])))
        print(rows[-1][0], rows[-1][1], flush=True)
    return runs, rows


def _ratios(runs, rows):
    """Paddle dygraph / PyTorch eager images/s per (width, shape) at 1 thread."""
    from autodl_design.config import SIZE_PRESETS
    ratios = {}
    for width in (int(SIZE_PRESETS["cpu"]["width"]), 16):
        for shape in ((1, 28, 28), (3, 32, 32)):
            def rate(kind, mode):
                for run in runs:
                    s = run["spec"]
                    if (s["kind"], s["mode"], s["width"], tuple(s["shape"]), s["threads"]) == (
                            kind, mode, width, shape, 1) and "error" not in run["result"]:
                        return run["result"]["images_per_second"]
                return None
            p, t = rate("paddle", "dygraph"), rate("torch", "eager")
            if p and t:
                key = "w%d_%s" % (width, "x".join(map(str, shape)))
                ratios[key] = p / t
                rows.append(("paddle/torch %s" % key, "%.2fx" % ratios[key]))
    return ratios


def _evaluation_row(alone, pair):
    if "error" in alone or any("error" in p for p in pair):
        return "error: %s" % alone.get("error", pair)
    return ("%5.1f s alone (%4.0f img/s), %5.1f s with 2 at once; %d train images, val %.3f "
            "test %.3f" % (alone["seconds"], alone["images_per_second"],
                           max(p["seconds"] for p in pair), alone["train_images"],
                           alone["val_accuracy"], alone["test_accuracy"]))


def _evaluations(base, quick, rows):
    """Seconds per candidate evaluation on real Fashion-MNIST, alone and two at once."""
    from autodl_design.config import SIZE_PRESETS
    cpu = SIZE_PRESETS["cpu"]
    evaluations = []
    if not os.path.isdir(FMNIST):
        return evaluations
    with tempfile.TemporaryDirectory() as tmp:
        budgets = [(int(cpu["width"]), int(cpu["images_per_class"]), int(cpu["early_stop"]),
                    False),
                   (16, int(cpu["images_per_class"]), int(cpu["early_stop"]), False)]
        if not quick:
            budgets += [(8, 300, 5, False), (8, 300, 5, True), (8, 300, 10, False),
                        (16, 300, 5, False)]
        for width, ipc, epochs, static in budgets:
            spec = dict(base, kind="evaluation", width=width, threads=1, epochs=epochs,
                        data=_ensure_data(tmp, ipc), images_per_class=ipc,
                        latency_repeats=int(cpu["latency_repeats"]), static_graph=static)
            alone = _run(spec)
            pair = [_collect(p) for p in [_launch(spec), _launch(spec)]]
            evaluations.append({"spec": spec, "alone": alone, "two_at_once": pair})
            rows.append(("eval w%d %d img/class x %d ep%s" % (
                width, ipc, epochs, " to_static" if static else ""), _evaluation_row(alone, pair)))
            print(rows[-1][0], rows[-1][1], flush=True)
    return evaluations


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    if FLAGS.worker:
        spec = json.loads(FLAGS.worker)
        _set_threads(spec["threads"])
        print("RESULT " + json.dumps(WORKERS[spec["kind"]](spec)), flush=True)
        return 0
    sys.path.insert(0, ROOT)
    from autodl_design.config import SIZE_PRESETS
    steps, rounds = (5, 1) if FLAGS.quick else (FLAGS.steps, FLAGS.rounds)
    cpu = SIZE_PRESETS["cpu"]
    arch = os.path.join(ROOT, "examples", "baseline.json")
    base = dict(arch=arch, num_stages=int(cpu["num_stages"]), num_cells=int(cpu["num_cells"]),
                batch=FLAGS.batch, steps=steps, rounds=rounds)
    runs, rows = _throughput(base, FLAGS.quick)
    ratios = _ratios(runs, rows)
    evaluations = _evaluations(base, FLAGS.quick, rows)
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join("%-*s  %s" % (width, k, v) for k, v in rows))
    out = {"benchmark": "trainer", "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                       "python": platform.python_version()},
           "batch": FLAGS.batch, "steps": steps, "rounds": rounds,
           "throughput": runs, "paddle_over_torch": ratios, "evaluations": evaluations}
    os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
    tmp = FLAGS.output + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=2)
    os.replace(tmp, FLAGS.output)
    print("wrote %s" % FLAGS.output)
    return 0


if __name__ == "__main__":
    app.run(main)
