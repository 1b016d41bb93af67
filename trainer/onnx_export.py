"""ONNX beside Paddle's inference format: convert with paddle2onnx, check and run with onnxruntime.

``convert`` turns a ``paddle.jit.save`` export (``PREFIX.json`` +
``PREFIX.pdiparams``) into an ONNX file. paddle2onnx aborts the whole process
(SIGABRT from its C++ code) on an op it cannot convert, and its Python
``export`` only logs other errors, so the conversion runs in a child process
and a failure becomes ``ConversionError`` whose message names the op(s).
``session``/``predict``/``check`` run the ONNX file with onnxruntime on the
CPU and compare it with Paddle's logits.
"""
import json
import os
import subprocess
import sys
from typing import Iterator, List, Sequence, Tuple

import numpy as np

OPSET = 13
ONNX_FILE = "model.onnx"
CHECK_TOLERANCE = 1e-4  # max |logit difference| ONNX vs Paddle accepted by ``check``

# The child: paddle2onnx.export with no post-optimisation (its default
# "polygraphy" constant folding pip-installs missing modules at run time).
_CHILD = """
import sys, paddle2onnx
opset, args = int(sys.argv[1]), sys.argv[2:]
for prefix, out in zip(args[::2], args[1::2]):
    paddle2onnx.export(prefix + ".json", prefix + ".pdiparams", out, opset_version=opset,
                       auto_upgrade_opset=True, enable_onnx_checker=True, optimize_tool="None")
"""

# PIR op names whose paddle2onnx converter is registered under the legacy name.
_LEGACY_NAMES = {"add": "elementwise_add", "subtract": "elementwise_sub",
                 "multiply": "elementwise_mul", "divide": "elementwise_div",
                 "maximum": "elementwise_max", "minimum": "elementwise_min",
                 "matmul": "matmul_v2", "flatten": "flatten_contiguous_range"}
# Program plumbing that is not converted op by op.
_PLUMBING = {"data", "fetch", "parameter", "combine", "split", "slice", "p"}


class ConversionError(Exception):
    """paddle2onnx could not convert the model; the message names the op(s) when known."""


class CheckError(Exception):
    """The ONNX model's predictions differ from Paddle's."""


def versions() -> str:
    """``paddle2onnx X, onnxruntime Y`` for messages and records."""
    import onnxruntime
    import paddle2onnx
    return "paddle2onnx %s, onnxruntime %s" % (paddle2onnx.__version__, onnxruntime.__version__)


def _ops_in(node) -> Iterator[str]:
    if isinstance(node, dict):
        for op in node.get("ops", []) if isinstance(node.get("ops"), list) else []:
            yield str(op.get("#", ""))
        for value in node.values():
            yield from _ops_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _ops_in(value)


def program_ops(json_path: str) -> List[str]:
    """Names of the ops of a saved PIR program (``PREFIX.json``), in first-use order.

    Names are without their dialect (``conv2d``, ``batch_norm_``, ...).
    """
    with open(json_path) as f:
        program = json.load(f)["program"]
    seen: List[str] = []
    for name in _ops_in(program):
        short = name.split(".", 1)[-1]
        if short and short not in seen:
            seen.append(short)
    return seen


def unsupported_ops(ops: List[str]) -> List[str]:
    """The ops among ``ops`` that paddle2onnx has no converter for."""
    from paddle2onnx import paddle2onnx_cpp2py_export as p2o
    supported = set(p2o.get_all_supported_operators_pir())
    missing = []
    for op in ops:
        base = op.rstrip("_")
        if op in _PLUMBING or {op, base, _LEGACY_NAMES.get(base, base)} & supported:
            continue
        missing.append(op)
    return missing


def _run_child(pairs: Sequence[Tuple[str, str]], timeout: float):
    args = [a for pair in pairs for a in pair]
    return subprocess.run([sys.executable, "-c", _CHILD, str(OPSET)] + args,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, check=False)


def _written(path: str) -> bool:
    return os.path.isfile(path) and os.path.getsize(path) > 0


def convert(prefix: str, out_path: str, timeout: float = 600.0) -> None:
    """Converts ``PREFIX.json``/``PREFIX.pdiparams`` to the ONNX file ``out_path``.

    Raises:
      ConversionError: paddle2onnx failed (the message names the unsupported
        op(s), or quotes paddle2onnx's last line); nothing is left at ``out_path``.
    """
    proc = _run_child([(prefix, out_path)], timeout)
    if proc.returncode == 0 and _written(out_path):
        return
    if os.path.exists(out_path):
        os.remove(out_path)
    missing = unsupported_ops(program_ops(prefix + ".json"))
    if missing:
        raise ConversionError("paddle2onnx cannot convert op %s" % ", ".join(missing))
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    raise ConversionError("paddle2onnx failed (exit %d): %s"
                          % (proc.returncode, lines[-1] if lines else "no output"))


def convert_many(pairs: Sequence[Tuple[str, str]], timeout: float = 1800.0) -> None:
    """``convert`` of many (prefix, out_path) pairs in one child process (one Paddle import).

    Raises:
      ConversionError: as ``convert``, for the first pair that fails.
    """
    proc = _run_child(pairs, timeout)
    if proc.returncode == 0 and all(_written(out) for _, out in pairs):
        return
    for prefix, out in pairs:
        if not _written(out):
            convert(prefix, out, timeout)


def session(path: str, threads: int = 1):
    """An onnxruntime CPU ``InferenceSession`` of ``path`` using ``threads`` threads."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def predict(sess, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Logits float32 [N, classes] of ``sess`` for float32 [N, C, H, W] ``images``."""
    name = sess.get_inputs()[0].name
    out = [sess.run(None, {name: np.ascontiguousarray(images[s:s + batch_size], np.float32)})[0]
           for s in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def check(onnx_path: str, images: np.ndarray, expected: np.ndarray) -> Tuple[float, int]:
    """Compares onnxruntime's logits of ``images`` with Paddle's ``expected`` logits.

    Returns:
      (max |logit difference|, number of images).

    Raises:
      CheckError: the difference exceeds ``CHECK_TOLERANCE`` or a top-1 class differs.
    """
    got = predict(session(onnx_path), images)
    if len(images) == 0:
        return 0.0, 0
    diff = float(np.max(np.abs(got - expected)))
    differ = int(np.sum(np.argmax(got, 1) != np.argmax(expected, 1)))
    if diff > CHECK_TOLERANCE or differ:
        raise CheckError("ONNX predictions differ from Paddle's: max |logit diff| %.3g "
                         "(tolerance %.0e), top-1 differs on %d of %d images"
                         % (diff, CHECK_TOLERANCE, differ, len(images)))
    return diff, len(images)
