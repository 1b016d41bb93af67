"""Entry point: make a dataset folder (chunks + test split + manifest) for the search.

Examples::

  python dataset_maker.py --source cifar10 --input cifar-10-python.tar.gz
  python dataset_maker.py --source fashion_mnist --output ./data/fmnist
  python dataset_maker.py --source folder --input ./my_images --image_size 32

As in AutoDL Design, --images_per_class is the number of images of each class
over all chunks (default 100 -> 10 chunks of 100 images, 10 per class);
chunks 0..K-2 train a candidate, the last chunk validates it. See docs/data.md.
Bad input: one line on stderr naming the file and the problem, exit code 2,
nothing written.
"""
import os
import sys

from absl import app
from absl import flags

from autodl_design import cli
from trainer import data

FLAGS = flags.FLAGS
_DEFAULT_INPUT = {"cifar10": "./cifar/cifar-10-python.tar.gz",
                  "fashion_mnist": data.FASHION_MNIST_DIR}


def _define():
    flags.DEFINE_enum("source", "cifar10", list(data.SOURCES),
                      "cifar10: the official python tarball (cifar-10-python.tar.gz) or its "
                      "extracted folder; fashion_mnist: a folder of idx files (.gz or raw); "
                      "folder: one subfolder of png/jpg images per class (optionally under "
                      "train/ and test/).")
    flags.DEFINE_string("input", "", "What to read (default: %s for cifar10, %s for "
                        "fashion_mnist; required for folder)."
                        % (_DEFAULT_INPUT["cifar10"], _DEFAULT_INPUT["fashion_mnist"]))
    flags.DEFINE_string("output", "./cifar/pickle-cifar-10", "Dataset folder to create "
                        "(AutoDL Design's default path; the trainer's --data_path).")
    flags.DEFINE_integer("num_chunks", 10, "Chunks: all but the last train a candidate, the "
                         "last validates it (AutoDL Design: 9 + 1).", lower_bound=2)
    flags.DEFINE_integer("images_per_class", 100, "Images of each class over all chunks "
                         "(AutoDL Design's chunk_size); each chunk gets 1/num_chunks of them.",
                         lower_bound=1)
    flags.DEFINE_integer("test_per_class", 100, "Held-out test images per class, from the "
                         "source's test set (0 = all available).", lower_bound=0)
    flags.DEFINE_integer("image_size", 32, "Side in pixels that folder images are resized to "
                         "(folder source only).", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the class-balanced selection and shuffling.",
                         lower_bound=0)


def _input_path() -> str:
    if FLAGS.input:
        return FLAGS.input
    if FLAGS.source == "folder":
        raise app.UsageError("--source folder needs --input (a folder of class subfolders)")
    return _DEFAULT_INPUT[FLAGS.source]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    if FLAGS["image_size"].present and FLAGS.source != "folder":
        raise app.UsageError("--image_size applies to --source folder only")
    input_path = _input_path()
    try:
        status, manifest = data.build_dataset(
            FLAGS.source, input_path, FLAGS.output, num_chunks=FLAGS.num_chunks,
            images_per_class=FLAGS.images_per_class, test_per_class=FLAGS.test_per_class,
            seed=FLAGS.seed, image_size=FLAGS.image_size)
    except data.DatasetError as e:
        print("dataset_maker.py: error: %s" % e, file=sys.stderr)
        sys.exit(2)
    chunks = [f for f in manifest["files"] if f["split"] != "test"]
    test = [f for f in manifest["files"] if f["split"] == "test"][0]
    h, w, c = manifest["image_shape_hwc"]
    sizes = sorted({f["count"] for f in chunks})
    summary = ("%d chunks of %s images (%d train + 1 validation), %d test images, %d classes, "
               "%dx%dx%d, augment=%s" % (
                   len(chunks), "/".join(map(str, sizes)), len(chunks) - 1, test["count"],
                   len(manifest["class_names"]), h, w, c, manifest["augment"]))
    if status == "unchanged":
        print("%s already holds this dataset (same settings and checksums): %s"
              % (FLAGS.output, summary))
    else:
        print("Wrote %s: %s" % (os.path.abspath(FLAGS.output), summary))


if __name__ == "__main__":
    _define()
    cli.run(main)
