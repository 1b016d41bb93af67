"""Trains and measures one architecture: python -m trainer --arch ARCH.json [--epochs E].

Prints the model outline, trains on the dataset (``--data_path``, default the
embedded Fashion-MNIST set) and prints validation and test accuracy,
parameters, FLOPs, latency and memory as a table. ``--export DIR`` saves the
trained model for inference (``paddle.jit.save``) and checks that the
reloaded model gives the same predictions. Sizes (--width, --num_stages, ...)
and the preset come from the shared flags (``python -m trainer --helpfull``).
"""
import dataclasses
import os
import sys

from absl import app
from absl import flags as absl_flags

import flags  # noqa: F401  (defines the shared flags and build_config)

absl_flags.DEFINE_string("arch", None, "Architecture JSON file (e.g. examples/baseline.json).")
absl_flags.DEFINE_integer("epochs", None, "Training epochs (default: --early_stop).",
                          lower_bound=1)
absl_flags.DEFINE_string("export", "", "Folder to save the trained model for inference "
                         "(paddle.jit.save); must not exist or be empty.")

FLAGS = absl_flags.FLAGS


def _fail(message: str, code: int = 2) -> int:
    print("error: %s" % " ".join(str(message).split()), file=sys.stderr)
    return code


def _format_table(rows) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join("%-*s  %s" % (width, k, v) for k, v in rows)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    if not FLAGS.arch:
        return _fail("--arch is required: give an architecture JSON file, e.g. "
                     "--arch examples/baseline.json")
    from autodl_design.arch import Architecture
    try:
        arch = Architecture.load(FLAGS.arch)
    except ValueError as e:
        return _fail(e)
    if FLAGS.export and os.path.exists(FLAGS.export) and (
            not os.path.isdir(FLAGS.export) or os.listdir(FLAGS.export)):
        return _fail("--export %s exists and is not an empty folder: give a new folder"
                     % FLAGS.export)
    config = flags.build_config()
    from trainer import data as data_lib
    try:
        path = config.data.data_path or data_lib.ensure_default_dataset(
            config.data.images_per_class)
        data = data_lib.load_dataset(path)
    except (data_lib.DatasetError, OSError) as e:
        return _fail(e)

    from trainer import metrics, network, train
    from autodl_design.devices import use_device
    device = use_device(config.devices.trainer_devices[0])
    trainer_config = config.trainer
    if FLAGS.epochs is not None:
        trainer_config = dataclasses.replace(trainer_config, early_stop=FLAGS.epochs)
    image_shape = tuple(data.image_shape)
    print("Architecture %s (%s):\n%s" % (FLAGS.arch, arch.hash()[:12], arch.describe()))
    print("\nNetwork (%s preset, ratio %d):\n%s" % (config.search.preset, trainer_config.ratio,
                                                 network.summary(arch, trainer_config,
                                                                 image_shape)))
    print("\nData: %s: %d train, %d val, %d test images, %d classes, augment %s"
          % (path, len(data.train_images), len(data.val_images), len(data.test_images),
             data.num_classes, data.augment))
    hw = metrics.measure_hardware(arch, trainer_config, image_shape, data.num_classes)
    print("Params %s, FLOPs %s per image. Training %d epochs on %s ..."
          % (format(hw["params"], ","), format(hw["flops"], ","), trainer_config.early_stop,
             device))

    def on_epoch(epoch, val):
        print("  epoch %d/%d: val accuracy %.4f" % (epoch, trainer_config.early_stop, val))
        return True

    result, model = train.fit(arch, trainer_config, data, on_epoch=on_epoch)
    if result["status"] != "ok":
        return _fail("training failed: %s" % result["reason"], 1)
    rows = [("val accuracy", "%.4f" % result["val_accuracy"]),
            ("test accuracy", "%.4f" % result["test_accuracy"]),
            ("train loss", "%.4f" % result["train_loss"]),
            ("epochs", "%d" % result["epochs"]),
            ("params", "%s (%s trainable)" % (format(hw["params"], ","),
                                             format(hw["trainable_params"], ","))),
            ("FLOPs (multiply-adds)", "%s per image" % format(hw["flops"], ",")),
            ("latency", "%.2f ms median, %.2f ms p90 (batch %d, %s)"
             % (hw["latency_ms"], hw["latency_p90_ms"], hw["latency_batch"], device)),
            ("peak memory", "%.2f MB (%s)" % (hw["memory_mb"], hw["memory_source"])),
            ("training speed", "%.0f images/s" % result["images_per_second"]),
            ("wall time", "%.1f s" % result["seconds"])]
    print("\n" + _format_table(rows))
    if FLAGS.export:
        check = data.test_images[:256] if len(data.test_images) else data.val_images[:256]
        try:
            diff = train.export_model(model, image_shape, FLAGS.export, arch, trainer_config,
                                data.class_names, check)
        except (RuntimeError, OSError) as e:
            return _fail("export to %s failed: %s" % (FLAGS.export, e), 1)
        print("\nExported to %s; paddle.jit.load reproduces the predictions on %d images "
              "(max |logit diff| %.2g)" % (FLAGS.export, len(check), diff))
    return 0


if __name__ == "__main__":
    from autodl_design import cli
    cli.run(main)
