"""Trains and measures one architecture: python -m trainer --arch ARCH.json [--epochs E].

``ARCH.json`` may be a candidate of a recipe search (e.g. its ``best.json``):
its ``"recipe"`` (scale and training settings) is trained exactly;
``--width_mult W --depth D --resolution R`` replace or add those scale
decisions (the width multiplies ``--width``, the depth is cells per stage,
the resolution the input side in pixels; images are resized).

Prints the model outline, trains on the dataset (``--data_path``, default the
embedded Fashion-MNIST set) and prints validation and test accuracy,
parameters, FLOPs, latency and memory as a table. ``--export DIR`` saves the
trained model for inference (``paddle.jit.save``) and checks that the
reloaded model gives the same predictions, converts it to ONNX (paddle2onnx)
and checks onnxruntime's predictions on the test split, and writes
``model.py``, the network as standalone Paddle code, with its weights. Sizes (--width, --num_stages, ...)
and the preset come from the shared flags (``python -m trainer --helpfull``);
``--seed`` seeds the network's weights and the training. The work is done by
``trainer.single``.
"""
import sys

from absl import app
from absl import flags as absl_flags

import flags  # noqa: F401  (defines the shared flags and build_config)

absl_flags.DEFINE_string("arch", None, "Architecture JSON file (e.g. examples/baseline.json).")
absl_flags.DEFINE_integer("epochs", None, "Training epochs (default: --early_stop).",
                          lower_bound=1)
absl_flags.DEFINE_string("export", "", "Folder to save the trained model for inference "
                         "(paddle.jit.save), as ONNX and as standalone model.py; must not exist or "
                         "be empty.")

absl_flags.DEFINE_float("width_mult", None, "Scale: multiplies --width (replaces the recipe's).")
absl_flags.DEFINE_integer("depth", None, "Scale: cells per stage (replaces the recipe's).")
absl_flags.DEFINE_integer("resolution", None, "Scale: input side in pixels, from 8 to the images' "
                          "side; images are resized (replaces the recipe's).")

FLAGS = absl_flags.FLAGS


def _fail(message: str, code: int = 2) -> int:
    print("error: %s" % " ".join(str(message).split()), file=sys.stderr)
    return code


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    if not FLAGS.arch:
        return _fail("--arch is required: give an architecture JSON file, e.g. "
                     "--arch examples/baseline.json")
    from trainer import single
    from trainer.data import DatasetError
    scale = {"width_mult": FLAGS.width_mult, "depth": FLAGS.depth,
             "resolution": FLAGS.resolution}
    try:
        arch, recipe = single.load_candidate(FLAGS.arch, FLAGS.export, scale)
    except ValueError as e:
        return _fail(e)
    config = flags.build_config()
    try:
        data_path, data = single.load_data(config.data)
    except (DatasetError, OSError) as e:
        return _fail(e)
    try:
        single.run(arch, FLAGS.arch, config, data, data_path, seed=FLAGS.seed,
                   epochs=FLAGS.epochs, export_to=FLAGS.export, recipe=recipe)
    except single.Failed as e:
        return _fail(e, 1)
    except single.BadInput as e:  # the resolution does not fit the images or the table
        return _fail(e)
    return 0


if __name__ == "__main__":
    from autodl_design import cli
    cli.run(main)
