"""Everything a deployment needs in one folder: Paddle inference model, ONNX, model.py.

``export_all`` writes (through ``trainer.train.export_model``) the Paddle
inference model with ``arch.json`` and ``export.json``, then
``model.pdparams`` with the standalone ``model.py`` (``trainer.codegen``),
then ``model.onnx`` (``trainer.onnx_export``), checked with onnxruntime
against Paddle's logits on the test split. A model paddle2onnx cannot convert
leaves the rest of the export in place and is reported in the result.
"""
import dataclasses
import os
from typing import List, Optional, Tuple

import numpy as np

from autodl_design.arch import Architecture
from autodl_design.config import TrainerConfig


@dataclasses.dataclass
class ExportResult:
    """What ``export_all`` wrote and checked.

    Attributes:
      folder: the export folder.
      files: (file name, bytes) of every file in it.
      reload_diff: max |logit diff| of ``paddle.jit.load`` against the model.
      reload_images: images of that check.
      onnx_diff: max |logit diff| of onnxruntime against Paddle (None: no ONNX).
      onnx_images: images of that check (the test split).
      onnx_error: why there is no ONNX model ("" when there is).
    """
    folder: str
    files: List[Tuple[str, int]]
    reload_diff: float
    reload_images: int
    onnx_diff: Optional[float] = None
    onnx_images: int = 0
    onnx_error: str = ""


def _check_images(data) -> np.ndarray:
    return data.test_images if len(data.test_images) else data.val_images


def write_standalone(model, arch: Architecture, trainer_config: TrainerConfig, data,
                     folder: str) -> None:
    """Writes ``model.pdparams`` (the trained weights) and ``model.py`` into ``folder``."""
    from autodl_design.backend import paddle
    from trainer import codegen
    paddle.save(model.state_dict(), os.path.join(folder, codegen.WEIGHTS_FILE))
    source = codegen.model_source(arch, trainer_config, tuple(data.image_shape),
                                  int(data.num_classes), list(data.class_names))
    with open(os.path.join(folder, "model.py"), "w") as f:
        f.write(source)


def write_onnx(model, data, folder: str) -> Tuple[float, int]:
    """Converts the Paddle export in ``folder`` to ``model.onnx`` and checks it on the test split.

    Returns:
      (max |logit diff|, images checked).

    Raises:
      trainer.onnx_export.ConversionError: paddle2onnx could not convert it.
      trainer.onnx_export.CheckError: onnxruntime's predictions differ (the
        ONNX file is removed).
    """
    from trainer import onnx_export, train
    path = os.path.join(folder, onnx_export.ONNX_FILE)
    onnx_export.convert(os.path.join(folder, train.EXPORT_PREFIX), path)
    images = _check_images(data)
    try:
        return onnx_export.check(path, images, train.predict(model, images))
    except onnx_export.CheckError:
        os.remove(path)
        raise


def export_all(model, arch: Architecture, trainer_config: TrainerConfig, data,
               folder: str) -> ExportResult:
    """Exports ``model`` to ``folder`` in every format (see the module docstring).

    Raises:
      RuntimeError, OSError: the Paddle export or its reload check failed
        (nothing is left behind).
      trainer.onnx_export.CheckError: the ONNX model disagrees with Paddle.
    """
    from trainer import onnx_export, train
    reload_images = _check_images(data)[:256]
    reload_diff = train.export_model(model, tuple(data.image_shape), folder, arch,
                                     trainer_config, data.class_names, reload_images)
    write_standalone(model, arch, trainer_config, data, folder)
    result = ExportResult(folder, [], reload_diff, len(reload_images))
    try:
        result.onnx_diff, result.onnx_images = write_onnx(model, data, folder)
    except onnx_export.ConversionError as e:
        result.onnx_error = str(e)
    result.files = [(name, os.path.getsize(os.path.join(folder, name)))
                    for name in sorted(os.listdir(folder))]
    return result


def describe(result: ExportResult) -> List[str]:
    """Lines for the user: the files with their sizes and the checks."""
    lines = ["Exported to %s:" % result.folder]
    lines += ["  %-16s %10s bytes" % (name, format(size, ",")) for name, size in result.files]
    lines.append("paddle.jit.load reproduces the predictions on %d images (max |logit diff| "
                 "%.2g)" % (result.reload_images, result.reload_diff))
    if result.onnx_error:
        lines.append("no ONNX model: %s; the Paddle export stands" % result.onnx_error)
    else:
        from trainer import onnx_export
        lines.append("ONNX (%s): same top-1 on all %d test images, max |logit diff| %.2g "
                     "(<= %.0e)" % (onnx_export.versions(), result.onnx_images,
                                    result.onnx_diff, onnx_export.CHECK_TOLERANCE))
    lines.append("standalone Paddle code: model.py (load(folder) -> nn.Layer with the weights)")
    return lines
