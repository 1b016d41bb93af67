"""Inference runtimes a latency table can be measured through.

* ``paddle``: Paddle dygraph, what the search measures without a table
  (``trainer.metrics.measure_hardware``).
* ``paddle_inference``: the saved inference model (``paddle.jit.save``) run by
  Paddle Inference's predictor (``paddle.inference``), as a C++/Python
  deployment of ``python -m trainer --export`` runs it.
* ``onnxruntime``: the same model converted with paddle2onnx and run by an
  onnxruntime CPU session, as a deployment of ``model.onnx`` runs it.

``Compiled`` turns Paddle layers into a callable of the runtime; for the
static runtimes every layer is saved with a fixed input shape (the latency
batch), and all ONNX conversions of a profile run in one child process.
"""
import os
import shutil
import tempfile
import warnings
from typing import Callable, List, Sequence, Tuple

import numpy as np

RUNTIMES = ("paddle", "paddle_inference", "onnxruntime")


def version(runtime: str) -> str:
    """``name version`` of ``runtime`` for table descriptions."""
    from autodl_design.backend import paddle
    if runtime == "onnxruntime":
        import onnxruntime
        return "onnxruntime %s" % onnxruntime.__version__
    if runtime == "paddle_inference":
        return "Paddle Inference %s" % paddle.__version__
    return "Paddle %s" % paddle.__version__


class Compiled:
    """Saves Paddle layers and loads them into a runtime; ``close`` removes the files.

    Usage: ``add`` every layer with its input shapes, then ``build(threads)``,
    which returns one zero-argument callable per layer (a forward pass of its
    fixed random inputs, outputs left in the runtime).
    """

    def __init__(self, runtime: str):
        if runtime not in RUNTIMES[1:]:
            raise ValueError("runtime %r is not one of %s" % (runtime, ", ".join(RUNTIMES[1:])))
        self.runtime = runtime
        self.folder = tempfile.mkdtemp(prefix="autodl-runtime-")
        self.items: List[Tuple[str, List[List[int]]]] = []

    def add(self, layer, shapes: Sequence[Sequence[int]], as_list: bool = False) -> None:
        """Saves eval-mode ``layer`` taking float32 inputs of ``shapes``.

        ``as_list``: the layer takes all inputs as one list argument.
        """
        from autodl_design.backend import paddle
        prefix = os.path.join(self.folder, "m%d" % len(self.items))
        specs = [paddle.static.InputSpec(list(s), "float32", "x%d" % i)
                 for i, s in enumerate(shapes)]
        layer.eval()
        with warnings.catch_warnings():  # a block without weights (an add) has no variable
            warnings.filterwarnings("ignore", message="no variable in your model")
            paddle.jit.save(layer, prefix, input_spec=[specs] if as_list else specs)
        self.items.append((prefix, [list(s) for s in shapes]))

    def build(self, threads: int, seed: int = 0) -> List[Callable]:
        """One callable per added layer, run through the runtime with ``threads`` threads.

        Raises:
          trainer.onnx_export.ConversionError: paddle2onnx could not convert a layer.
        """
        rng = np.random.default_rng(seed)
        inputs = [[rng.standard_normal(s).astype(np.float32) for s in shapes]
                  for _, shapes in self.items]
        if self.runtime == "onnxruntime":
            return self._onnx(inputs, threads)
        return [_predictor_fn(prefix, x, threads) for (prefix, _), x in zip(self.items, inputs)]

    def _onnx(self, inputs: List[List[np.ndarray]], threads: int) -> List[Callable]:
        from trainer import onnx_export
        pairs = [(prefix, prefix + ".onnx") for prefix, _ in self.items]
        onnx_export.convert_many(pairs)
        fns = []
        for (_, path), xs in zip(pairs, inputs):
            sess = onnx_export.session(path, threads)
            feed = {i.name: x for i, x in zip(sess.get_inputs(), xs)}
            fns.append(lambda sess=sess, feed=feed: sess.run(None, feed))
        return fns

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _predictor_fn(prefix: str, xs: List[np.ndarray], threads: int) -> Callable:
    """A Paddle Inference predictor of ``prefix`` with inputs ``xs`` copied in; its run."""
    from autodl_design.backend import paddle
    params = prefix + ".pdiparams"
    config = paddle.inference.Config(prefix + ".json", params if os.path.exists(params) else "")
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(int(threads))
    config.disable_glog_info()
    predictor = paddle.inference.create_predictor(config)
    for name, x in zip(predictor.get_input_names(), xs):
        predictor.get_input_handle(name).copy_from_cpu(x)
    return predictor.run
