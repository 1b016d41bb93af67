"""Profiles the target device: python -m trainer.profile --output TABLE.json [--threads T].

Run it on the machine the searched network will be deployed on (a Raspberry
Pi, a Jetson, a desktop CPU; Paddle installed there), with the same size
flags as the search (``--preset``/``--width``/``--num_stages``/``--num_cells``/
``--ratio``/``--dropout``, ``--num_nodes``, ``--ops``, ``--latency_batch``,
``--latency_repeats``) and the search's image shape (``--image_shape H,W,C``
and ``--num_classes``, or ``--data_path`` to read both from the dataset's
manifest). It measures every building block the configured network can
contain (``trainer.latency_table.space_blocks``) and a few whole networks to
calibrate how the blocks compose, and writes TABLE.json; copy it to the
search machine and run ``main.py --latency_table TABLE.json``.
``--search_space FILE.json`` (the search's search-space file) makes the
table cover every scale of that file: each op at every channel width and
spatial size its width_mult x depth x resolution (x dropout) choices produce.
``--runtime paddle_inference|onnxruntime`` measures through the runtime the
deployed model runs in (``trainer.runtimes``) instead of Paddle dygraph.
docs/latency_table.md describes what is measured and how predictions compose; the
work is done by ``trainer.profiling``.
"""
import os
import sys
import time

from absl import app
from absl import flags as absl_flags

import flags  # noqa: F401  (defines the shared flags and build_config)

absl_flags.DEFINE_string("output", None, "Where to write the latency table (JSON).")
absl_flags.DEFINE_integer("threads", 1, "CPU threads Paddle may use (as the deployed model "
                          "will).", lower_bound=1)
absl_flags.DEFINE_string("image_shape", "28,28,1", "Input image H,W,C (the embedded default "
                         "dataset is 28,28,1); ignored with --data_path, whose manifest gives it.")
absl_flags.DEFINE_integer("num_classes", 10, "Classifier outputs; ignored with --data_path.",
                          lower_bound=1)
absl_flags.DEFINE_integer("calibration_archs", 10, "Random whole networks measured to "
                          "calibrate the sum of the block timings (0 = no calibration: scale "
                          "1).", lower_bound=0)
absl_flags.DEFINE_integer("calibration_seed", 20240611, "Seed of the calibration "
                          "architectures.", lower_bound=0)
absl_flags.DEFINE_integer("passes", 5, "Passes over all blocks and calibration networks, "
                          "each of --latency_repeats timed rounds; medians are taken over all "
                          "of them, so a burst of load from other processes during one pass "
                          "does not skew the table.", lower_bound=1)
# ---------------- export ----------------
absl_flags.DEFINE_enum("runtime", "paddle", ["paddle", "paddle_inference", "onnxruntime"],
                       "What runs the blocks and calibration networks: paddle (dygraph, as the "
                       "search measures; with memory figures), paddle_inference (the exported "
                       "inference model in Paddle Inference's predictor) or onnxruntime (the "
                       "model converted with paddle2onnx, in an onnxruntime CPU session), "
                       "as the deployed model will run. The table records it.")

if "search_space" not in absl_flags.FLAGS:  # the search's flag, when the shared flags have it
    absl_flags.DEFINE_string("search_space", "", "Search-space JSON file (width_mult, depth, "
                             "resolution, ... choices): the table covers every scale it lists.")

FLAGS = absl_flags.FLAGS


def _fail(message, code: int = 2) -> int:
    print("error: %s" % " ".join(str(message).split()), file=sys.stderr)
    return code


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    if not FLAGS.output:
        return _fail("--output is required: the latency table file to write, e.g. "
                     "--output table.json")
    folder = os.path.dirname(os.path.abspath(FLAGS.output))
    if not os.path.isdir(folder):
        return _fail("--output %s: folder %s does not exist" % (FLAGS.output, folder))
    config = flags.build_config()
    if FLAGS.runtime != "paddle" and config.devices.trainer_devices[0] != "cpu":
        return _fail("--runtime %s runs on the CPU (its CPU build is installed): give "
                     "--trainer_devices cpu" % FLAGS.runtime)
    from autodl_design import recipe
    from trainer import profiling
    from trainer.data import DatasetError
    try:
        image_shape, num_classes = profiling.input_shape(
            config.data.data_path, FLAGS.image_shape, FLAGS.num_classes)
        decisions = ()
        if FLAGS.search_space:
            decisions = recipe.load_search_space(FLAGS.search_space)[0]
            recipe.check_resolutions(decisions, min(image_shape[1:]))
        device = profiling.use_device(config.devices.trainer_devices[0], FLAGS.threads)
    except (DatasetError, ValueError, RuntimeError) as e:
        return _fail(e)
    t = time.perf_counter()
    from trainer.onnx_export import ConversionError
    try:
        table = profiling.profile(config, image_shape, num_classes, device, FLAGS.threads,
                                  FLAGS.calibration_archs, FLAGS.calibration_seed, FLAGS.passes,
                                  seed=FLAGS.seed, runtime=FLAGS.runtime, decisions=decisions)
    except ConversionError as e:
        return _fail(e, 1)
    table.save(FLAGS.output)
    print("wrote %s: %d entries, %s, in %.1f s" % (FLAGS.output, len(table.entries),
                                                   table.device["description"],
                                                   time.perf_counter() - t), flush=True)
    return 0


if __name__ == "__main__":
    from autodl_design import cli
    cli.run(main)
