"""Dataset folders: build them from CIFAR-10 / Fashion-MNIST / image folders, load, augment.

A dataset folder (format ``autodl-design-dataset/1``, see docs/data.md) holds
``chunk_0.npz`` .. ``chunk_{K-1}.npz`` (chunks 0..K-2 train a candidate, the
last one validates it, as in AutoDL Design), ``test.npz`` (held out, from the
source's own test set) and ``manifest.json``. Each .npz holds ``images``
uint8 [n, H, W, C] and ``labels`` int64 [n] and is read with
``allow_pickle=False``.

``--images_per_class`` follows AutoDL Design's ``dataset_maker.py``
(``--chunk_size``, "the number of each class"): it is the number of images of
each class in all chunks together; each chunk gets ``1 / num_chunks`` of them
(default 100 per class -> 10 chunks of 100 images, 10 per class).

Only numpy is imported here (Pillow only when an image folder is read); the
trainer gets the whole set in memory from ``load_dataset``.
"""
import copy
import dataclasses
import gzip
import io
import json
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import zipfile
import zlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from autodl_design import records

FORMAT = "autodl-design-dataset/1"
MANIFEST = "manifest.json"
TEST_FILE = "test.npz"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
SOURCES = ("cifar10", "fashion_mnist", "folder")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
DEFAULT_NUM_CHUNKS = 10
DEFAULT_TEST_PER_CLASS = 100
DEFAULT_SEED = 0

_CIFAR_TRAIN = tuple("data_batch_%d" % i for i in range(1, 6))
_CIFAR_FILES = _CIFAR_TRAIN + ("test_batch", "batches.meta")
_CIFAR_MEMBER_LIMIT = 1 << 30  # bytes; the real batches are 31 MB each
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


class DatasetError(ValueError):
    """Bad or missing data; the message is one line naming the file and the problem."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclasses.dataclass
class Dataset:
    """A dataset folder loaded into memory, ready for the trainer.

    Attributes:
      train_images: float32 [n_train, C, H, W], normalised with the manifest mean/std
        (chunks 0..K-2).
      train_labels: int64 [n_train].
      val_images: float32 [n_val, C, H, W] (the last chunk).
      val_labels: int64 [n_val].
      test_images: float32 [n_test, C, H, W] (held-out test split).
      test_labels: int64 [n_test].
      class_names: one name per class; labels index it.
      image_shape: (C, H, W).
      num_classes: len(class_names).
      augment: whether training should use ``augment_batch`` (colour data: yes,
        MNIST-like: no).
      manifest: the parsed manifest.json.
      path: the dataset folder.
    """
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: List[str]
    image_shape: Tuple[int, int, int]
    num_classes: int
    augment: bool
    manifest: Dict
    path: str = ""


# --------------------------------------------------------------------------- loading


def read_manifest(path: str) -> Dict:
    """Reads and checks ``path/manifest.json`` (structure only, not the data files).

    Raises:
      DatasetError: missing, not JSON, wrong format tag or missing fields.
    """
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise DatasetError("%s: no such dataset folder (make one with dataset_maker.py)" % path)
    try:
        with open(mpath, "r", encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise DatasetError("%s: missing, so %s is not a dataset folder (make one with "
                           "dataset_maker.py)" % (mpath, path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError("%s: cannot be read (%s)" % (mpath, e)) from None
    except json.JSONDecodeError as e:
        raise DatasetError("%s: not valid JSON (%s at line %d)"
                           % (mpath, e.msg, e.lineno)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DatasetError("%s: format %r is not %r (not made by this dataset_maker.py)"
                           % (mpath, found, FORMAT))
    needed = {"source": str, "class_names": list, "image_shape_hwc": list, "settings": dict,
              "augment": bool, "mean": list, "std": list, "files": list}
    for key, kind in needed.items():
        if not isinstance(manifest.get(key), kind):
            raise DatasetError("%s: field %r is missing or not a %s" % (mpath, key, kind.__name__))
    channels = len(manifest["mean"])
    shape = manifest["image_shape_hwc"]
    if (len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape)
            or shape[2] != channels or len(manifest["std"]) != channels):
        raise DatasetError("%s: image_shape_hwc %s does not match mean/std of %d channels"
                           % (mpath, shape, channels))
    splits = [f.get("split") if isinstance(f, dict) else None for f in manifest["files"]]
    if (splits.count("val") != 1 or splits.count("test") != 1 or splits.count("train") < 1
            or None in splits):
        raise DatasetError("%s: files must list train chunks, one val chunk and one test "
                           "split (found splits %s)" % (mpath, splits))
    for entry in manifest["files"]:
        for key in ("name", "sha256", "count", "per_class"):
            if key not in entry:
                raise DatasetError("%s: file entry %s lacks %r" % (mpath, entry, key))
        if os.path.basename(entry["name"]) != entry["name"]:
            raise DatasetError("%s: file name %r must not contain a folder"
                               % (mpath, entry["name"]))
    return manifest


def _load_file(path: str, entry: Dict, shape_hwc: Sequence[int], num_classes: int
               ) -> Tuple[np.ndarray, np.ndarray]:
    fpath = os.path.join(path, entry["name"])
    if not os.path.isfile(fpath):
        raise DatasetError("%s: missing (listed in %s)" % (fpath, MANIFEST))
    digest = records.sha256_file(fpath)
    if digest != entry["sha256"]:
        raise DatasetError("%s: sha256 checksum mismatch (changed or corrupt since "
                           "dataset_maker.py wrote it; rebuild the dataset)" % fpath)
    try:
        with np.load(fpath, allow_pickle=False) as npz:
            if set(npz.files) != {"images", "labels"}:
                raise DatasetError("%s: holds arrays %s, expected images and labels"
                                   % (fpath, sorted(npz.files)))
            images, labels = npz["images"], npz["labels"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError("%s: not a readable .npz (%s)" % (fpath, e)) from None
    if images.dtype != np.uint8 or images.ndim != 4 or list(images.shape[1:]) != list(shape_hwc):
        raise DatasetError("%s: images are %s %s, expected uint8 [n, %s]" % (
            fpath, images.dtype, list(images.shape), ", ".join(map(str, shape_hwc))))
    if labels.dtype != np.int64 or labels.shape != (images.shape[0],):
        raise DatasetError("%s: labels are %s %s, expected int64 [%d]"
                           % (fpath, labels.dtype, list(labels.shape), images.shape[0]))
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError("%s: labels outside 0..%d" % (fpath, num_classes - 1))
    per_class = np.bincount(labels, minlength=num_classes).tolist()
    if per_class != list(entry["per_class"]):
        raise DatasetError("%s: images per class %s differ from the manifest's %s"
                           % (fpath, per_class, entry["per_class"]))
    return images, labels


def _normalise(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 [n, H, W, C] -> float32 [n, C, H, W], (x / 255 - mean) / std per channel."""
    out = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
    scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(1, -1, 1, 1)
    shift = (mean / std).astype(np.float32).reshape(1, -1, 1, 1)
    out *= scale
    out -= shift
    return out


def load_dataset(path: str) -> Dataset:
    """Loads a dataset folder into memory, checking format and checksums.

    Args:
      path: folder made by dataset_maker.py (or ``ensure_default_dataset``).

    Returns:
      The Dataset: float32 NCHW images normalised with the manifest mean/std
      (computed on the training chunks), int64 labels.

    Raises:
      DatasetError: one line naming the file and the problem.
    """
    manifest = read_manifest(path)
    shape_hwc = manifest["image_shape_hwc"]
    num_classes = len(manifest["class_names"])
    mean = np.asarray(manifest["mean"], dtype=np.float64)
    std = np.asarray(manifest["std"], dtype=np.float64)
    if np.any(std <= 0):
        raise DatasetError("%s: std %s must be positive" % (os.path.join(path, MANIFEST),
                                                           manifest["std"]))
    parts: Dict[str, List[Tuple[np.ndarray, np.ndarray]]] = {"train": [], "val": [], "test": []}
    for entry in manifest["files"]:
        parts[entry["split"]].append(_load_file(path, entry, shape_hwc, num_classes))

    def join(split):
        images = np.concatenate([p[0] for p in parts[split]])
        labels = np.concatenate([p[1] for p in parts[split]])
        return _normalise(images, mean, std), labels

    train_x, train_y = join("train")
    val_x, val_y = join("val")
    test_x, test_y = join("test")
    h, w, c = shape_hwc
    return Dataset(train_images=train_x, train_labels=train_y, val_images=val_x,
                   val_labels=val_y, test_images=test_x, test_labels=test_y,
                   class_names=list(manifest["class_names"]), image_shape=(c, h, w),
                   num_classes=num_classes, augment=bool(manifest["augment"]),
                   manifest=manifest, path=path)


def augment_batch(images: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Random crop after zero padding, plus random horizontal flip (vectorised).

    Draws, in this order: ``offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))``
    (row, column of the crop in the padded image) and ``flips = rng.random(n) < 0.5``.
    Padding is 0 in normalised units, i.e. the dataset's mean colour.

    Args:
      images: float32 [n, C, H, W] (normalised).
      rng: numpy Generator (the caller owns seeding).
      pad: pixels of padding on each side.

    Returns:
      A new float32 [n, C, H, W] array; ``images`` is not changed.
    """
    n, c, h, w = images.shape
    offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))
    flips = rng.random(n) < 0.5
    padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=images.dtype)
    padded[:, :, pad:pad + h, pad:pad + w] = images
    windows = sliding_window_view(padded, (h, w), axis=(2, 3))  # [n, c, 2p+1, 2p+1, h, w]
    out = windows[np.arange(n), :, offsets[:, 0], offsets[:, 1]]  # [n, c, h, w], a copy
    out[flips] = out[flips, :, :, ::-1]
    return out


def _axis_weights(size: int, side: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, t) of bilinear resampling ``size`` -> ``side`` (half-pixel centres, clamped)."""
    src = (np.arange(side, dtype=np.float64) + 0.5) * (size / side) - 0.5
    src = np.clip(src, 0.0, size - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, size - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resize_images(images: np.ndarray, side: int) -> np.ndarray:
    """Bilinear resize of float32 [N, C, H, W] images to [N, C, side, side].

    The same sampling as ``paddle.nn.functional.interpolate(mode="bilinear",
    align_corners=False)``: output pixel centres map to ``(i + 0.5) H / side
    - 0.5`` in the input, clamped to the border. Linear, so it commutes with
    the per-channel normalisation of the stored images.
    """
    n, c, h, w = images.shape
    if (h, w) == (side, side):
        return images
    i0, i1, t = _axis_weights(h, side)
    x = images[:, :, i0, :] * (1 - t)[:, None] + images[:, :, i1, :] * t[:, None]
    j0, j1, u = _axis_weights(w, side)
    x = x[:, :, :, j0] * (1 - u) + x[:, :, :, j1] * u
    return np.ascontiguousarray(x, dtype=np.float32)


def at_resolution(data, config):
    """``data`` as the network of ``config`` sees it: every split resized to its resolution.

    Args:
      data: a dataset (``train_images``, ``val_images``, ``test_images``
        float32 [N, C, H, W], and the labels; see ``trainer.train``).
      config: a ``TrainerConfig``; ``resolution`` 0 (or the images' side)
        returns ``data`` itself.

    Returns:
      A shallow copy with the three image arrays resized (``resize_images``)
      and ``image_shape`` set to (C, r, r); the dataset on disk is unchanged.

    Raises:
      autodl_design.recipe.SearchSpaceError: the resolution is below 8 or
        larger than the images (``trainer.walk.input_shape``).
    """
    from trainer.walk import input_shape
    if not config.resolution:
        return data
    shape = tuple(int(s) for s in data.train_images.shape[1:])
    want = input_shape(config, shape)
    if want == shape:
        return data
    out = copy.copy(data)
    for split in ("train", "val", "test"):
        setattr(out, split + "_images", resize_images(getattr(data, split + "_images"), want[1]))
    if hasattr(data, "image_shape"):
        out.image_shape = want
    return out


# --------------------------------------------------------------------------- writing


def _write_npz(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """Writes an uncompressed .npz with fixed timestamps, so equal data gives equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)


def _identity(manifest: Dict) -> str:
    """What makes two dataset folders the same dataset (everything but the input path)."""
    return json.dumps({k: v for k, v in manifest.items() if k != "input"}, sort_keys=True)


def _same_settings(manifest: Dict, source: str, settings: Dict) -> bool:
    return manifest.get("source") == source and manifest.get("settings") == settings


def check_output(output: str, source: str, settings: Dict) -> Optional[Dict]:
    """Checks, before any work, that ``output`` is free or may hold the same dataset.

    Returns:
      The existing manifest when ``output`` holds a dataset made with the same
      source and settings (the checksums are compared after building), else None.

    Raises:
      DatasetError: ``output`` is a file, a non-empty folder without a manifest,
        or a dataset made with other settings.
    """
    if not os.path.lexists(output):
        return None
    if not os.path.isdir(output):
        raise DatasetError("%s: exists and is not a folder; choose another --output" % output)
    if not os.listdir(output):
        return None
    if not os.path.exists(os.path.join(output, MANIFEST)):
        raise DatasetError("%s: exists, is not empty and is not a dataset folder (no %s); "
                           "choose another --output" % (output, MANIFEST))
    existing = read_manifest(output)
    if not _same_settings(existing, source, settings):
        raise DatasetError("%s: already holds a different dataset (%s); choose another "
                           "--output or delete it" % (output, _differences(existing, source,
                                                                           settings)))
    return existing


def _differences(existing: Dict, source: str, settings: Dict) -> str:
    """'seed=0 there, 1 asked'-style description of how two datasets differ."""
    there = dict(existing.get("settings") if isinstance(existing.get("settings"), dict) else {})
    there["source"] = existing.get("source")
    asked = dict(settings, source=source)
    diffs = ["%s=%s there, %s asked" % (k, there.get(k), asked.get(k))
             for k in sorted(set(there) | set(asked)) if there.get(k) != asked.get(k)]
    return "; ".join(diffs)


def write_dataset(output: str, chunks: Sequence[Tuple[np.ndarray, np.ndarray]],
                  test: Tuple[np.ndarray, np.ndarray], class_names: Sequence[str],
                  source: str, settings: Dict, augment: bool, input_path: str = "") -> str:
    """Writes a dataset folder atomically (temporary folder next to it, then os.replace).

    Args:
      output: the dataset folder to create.
      chunks: K >= 2 pairs (images uint8 [n, H, W, C], labels int64 [n]); the
        first K-1 train, the last validates.
      test: the held-out test split, same layout.
      class_names: one per class.
      source: "cifar10", "fashion_mnist", "folder" (or another tag).
      settings: how it was made (JSON values; recorded and compared).
      augment: whether the trainer should augment (colour data).
      input_path: where the source was read (recorded only).

    Returns:
      "created", or "unchanged" when ``output`` already held exactly this dataset.

    Raises:
      DatasetError: bad arrays, or ``output`` holds a different dataset.
    """
    num_classes = len(class_names)
    shape = _check_arrays(output, chunks, test, num_classes)
    mean, std = _channel_stats(output, [c[0] for c in chunks[:-1]])
    named = [("chunk_%d.npz" % i, "train" if i < len(chunks) - 1 else "val", c)
             for i, c in enumerate(chunks)] + [(TEST_FILE, "test", test)]

    output = os.path.abspath(output)
    parent = os.path.dirname(output)
    created_dirs = []
    d = parent
    while not os.path.isdir(d):
        created_dirs.append(d)
        d = os.path.dirname(d)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(output) + ".tmp-", dir=parent)
    done = False
    try:
        files = _write_files(tmp, named, num_classes)
        manifest = {
            "format": FORMAT, "source": source, "input": input_path,
            "class_names": list(class_names), "num_classes": num_classes,
            "image_shape_hwc": [int(s) for s in shape], "settings": dict(settings),
            "augment": bool(augment), "mean": [float(v) for v in mean],
            "std": [float(v) for v in std], "files": files,
        }
        manifest = json.loads(json.dumps(manifest))  # as it will read back
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")
        os.chmod(tmp, 0o755)
        status = _install(tmp, output, manifest)
        done = True
        return status
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            for d in created_dirs:  # innermost first; stops at one that is not empty
                try:
                    os.rmdir(d)
                except OSError:
                    break


def _check_arrays(output: str, chunks: Sequence[Tuple[np.ndarray, np.ndarray]],
                  test: Tuple[np.ndarray, np.ndarray], num_classes: int) -> Tuple[int, ...]:
    """Checks the chunks and the test split of ``write_dataset``; returns the image shape (H, W, C).

    Raises:
      DatasetError: fewer than 2 chunks, non-uint8 or non-[n, H, W, C] images,
        shapes that differ, or labels outside ``0..num_classes - 1``.
    """
    if len(chunks) < 2:
        raise DatasetError("%s: need at least 2 chunks (train + validation), got %d"
                           % (output, len(chunks)))
    shape = None
    for images, labels in list(chunks) + [test]:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DatasetError("%s: images must be uint8 [n, H, W, C], got %s %s"
                               % (output, images.dtype, list(images.shape)))
        if shape is None:
            shape = images.shape[1:]
        if images.shape[1:] != shape or labels.shape != (images.shape[0],):
            raise DatasetError("%s: inconsistent image or label shapes" % output)
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DatasetError("%s: labels outside 0..%d" % (output, num_classes - 1))
    return shape


def _channel_stats(output: str, train: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std [C] of the training images (uint8 [n, H, W, C]) scaled to 0..1.

    Raises:
      DatasetError: the training chunks are empty.
    """
    count = sum(x.shape[0] for x in train)
    if count == 0:
        raise DatasetError("%s: the training chunks are empty" % output)
    channels = train[0].shape[3]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for x in train:
        flat = x.reshape(-1, channels).astype(np.float64) / 255.0
        total += flat.sum(axis=0)
        total_sq += np.square(flat).sum(axis=0)
    pixels = count * train[0].shape[1] * train[0].shape[2]
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - np.square(mean), 0.0))
    std[std < 1e-6] = 1.0  # constant channel: nothing to scale
    return mean, std


def _write_files(tmp: str, named: Sequence[Tuple[str, str, Tuple[np.ndarray, np.ndarray]]],
                 num_classes: int) -> List[Dict]:
    """Writes each (file name, split, (images, labels)) into ``tmp``; their manifest entries."""
    files = []
    for name, split, (images, labels) in named:
        fpath = os.path.join(tmp, name)
        _write_npz(fpath, {"images": images, "labels": labels.astype(np.int64)})
        files.append({"name": name, "split": split, "count": int(images.shape[0]),
                      "per_class": np.bincount(labels, minlength=num_classes).tolist(),
                      "sha256": records.sha256_file(fpath)})
    return files


def _install(tmp: str, output: str, manifest: Dict) -> str:
    """Moves ``tmp`` to ``output`` unless ``output`` already holds a dataset."""
    for _ in range(2):
        if os.path.lexists(output) and not (os.path.isdir(output) and not os.listdir(output)):
            check_output(output, manifest["source"], manifest["settings"])
            existing = read_manifest(output)
            if _identity(existing) == _identity(manifest):
                return "unchanged"
            raise DatasetError("%s: already holds a dataset with the same settings but other "
                               "data (checksums differ: another input?); choose another "
                               "--output or delete it" % output)
        try:
            os.replace(tmp, output)
            return "created"
        except OSError:
            if not os.path.isdir(output):
                raise
            # Another process created it meanwhile: compare with that one.
    raise DatasetError("%s: could not be replaced" % output)


# --------------------------------------------------------------------------- sources


@dataclasses.dataclass
class _Source:
    """A source before splitting: labels, and how to fetch images by index.

    ``take(split, indices)`` returns uint8 [len(indices), H, W, C] for split
    "train" or "test". ``test_labels`` None means the test split comes from
    training images not used in the chunks.
    """
    name: str
    input: str
    class_names: List[str]
    train_labels: np.ndarray
    test_labels: Optional[np.ndarray]
    take: Callable[[str, np.ndarray], np.ndarray]
    train_desc: str
    test_desc: str
    augment: Optional[bool]  # None: colour images augment, grayscale do not


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays/dtypes and plain builtins."""

    def find_class(self, module, name):
        if name == "_reconstruct" and module in ("numpy.core.multiarray",
                                                 "numpy._core.multiarray"):
            return np._core.multiarray._reconstruct  # pylint: disable=protected-access
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "_codecs" and name == "encode":
            import codecs
            return codecs.encode
        raise pickle.UnpicklingError("refusing to load global %s.%s" % (module, name))


def _unpickle(raw: bytes, where: str) -> Dict[str, object]:
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # pickle raises many kinds on bad bytes; all mean "corrupt"
        raise DatasetError("%s: not a CIFAR-10 python pickle (%s: %s)"
                           % (where, type(e).__name__, e)) from None
    if not isinstance(obj, dict):
        raise DatasetError("%s: holds a %s, expected a dict" % (where, type(obj).__name__))
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _cifar_batch(raw: bytes, where: str) -> Tuple[np.ndarray, np.ndarray]:
    d = _unpickle(raw, where)
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DatasetError("%s: lacks 'data' array or 'labels' (keys %s): not a CIFAR-10 "
                           "batch" % (where, sorted(d)))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError("%s: data is %s %s, expected uint8 [n, 3072]"
                           % (where, data.dtype, list(data.shape)))
    if not isinstance(labels, (list, np.ndarray)):
        raise DatasetError("%s: labels is a %s, expected a list" % (where, type(labels).__name__))
    try:
        y = np.asarray(labels)
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise ValueError
        y = y.astype(np.int64)
    except (ValueError, TypeError):
        raise DatasetError("%s: labels are not a list of integers" % where) from None
    if y.shape[0] != data.shape[0]:
        raise DatasetError("%s: %d labels for %d images" % (where, y.shape[0], data.shape[0]))
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DatasetError("%s: labels outside 0..9: not CIFAR-10" % where)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # R, G, B planes -> HWC
    return np.ascontiguousarray(images), y


def _read_cifar_raw(path: str) -> Tuple[Dict[str, bytes], str]:
    """The six batches and batches.meta as bytes, from a tarball or a folder."""
    if not os.path.exists(path):
        raise DatasetError("%s: missing: download cifar-10-python.tar.gz (CIFAR-10 python "
                           "version) from the CIFAR-10 site and pass it with --input" % path)
    if os.path.isdir(path):
        folder = path
        if not os.path.exists(os.path.join(folder, "data_batch_1")):
            folder = os.path.join(path, "cifar-10-batches-py")
        missing = [n for n in _CIFAR_FILES if not os.path.isfile(os.path.join(folder, n))]
        if missing:
            raise DatasetError("%s: lacks %s: not an extracted CIFAR-10 python folder "
                               "(cifar-10-batches-py)" % (path, ", ".join(missing)))
        raw = {}
        for n in _CIFAR_FILES:
            with open(os.path.join(folder, n), "rb") as f:
                raw[n] = f.read()
        return raw, folder
    raw = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            members = tar.getmembers()  # reads the whole archive: finds truncation
            by_dir: Dict[str, Dict[str, tarfile.TarInfo]] = {}
            for m in members:
                if m.isfile():
                    head, tail = os.path.split(m.name)
                    if tail in _CIFAR_FILES:
                        by_dir.setdefault(head, {})[tail] = m
            complete = [d for d, found in by_dir.items() if len(found) == len(_CIFAR_FILES)]
            if not complete:
                raise DatasetError("%s: holds no cifar-10-batches-py/ with %s: not the "
                                   "CIFAR-10 python version (cifar-10-python.tar.gz)"
                                   % (path, ", ".join(_CIFAR_FILES)))
            for n, m in by_dir[sorted(complete)[0]].items():
                if m.size > _CIFAR_MEMBER_LIMIT:
                    raise DatasetError("%s: member %s is %d bytes, too big for CIFAR-10"
                                       % (path, m.name, m.size))
                f = tar.extractfile(m)
                raw[n] = f.read()
                if len(raw[n]) != m.size:
                    raise EOFError("member %s is cut short" % m.name)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DatasetError("%s: truncated or corrupt tarball (%s)" % (path, e)) from None
    return raw, path


def _read_cifar10(path: str) -> _Source:
    raw, where = _read_cifar_raw(path)

    def at(n):
        return "%s (%s)" % (path, n) if where == path else os.path.join(where, n)

    meta = _unpickle(raw["batches.meta"], at("batches.meta"))
    names = meta.get("label_names")
    if (not isinstance(names, list) or len(names) != 10
            or not all(isinstance(s, (bytes, str)) for s in names)):
        raise DatasetError("%s: label_names is not a list of 10 names: not CIFAR-10"
                           % at("batches.meta"))
    names = [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in names]
    train = [_cifar_batch(raw[n], at(n)) for n in _CIFAR_TRAIN]
    test_x, test_y = _cifar_batch(raw["test_batch"], at("test_batch"))
    train_x = np.concatenate([t[0] for t in train])
    train_y = np.concatenate([t[1] for t in train])
    arrays = {"train": train_x, "test": test_x}
    return _Source(name="cifar10", input=path, class_names=names, train_labels=train_y,
                   test_labels=test_y, take=lambda split, idx: arrays[split][idx],
                   train_desc=at("data_batch_1..5"), test_desc=at("test_batch"), augment=True)


def _idx_path(folder: str, base: str) -> str:
    for name in (base + ".gz", base):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            return p
    raise DatasetError("%s(.gz): missing: Fashion-MNIST idx files are expected in %s "
                       "(apt-get install dataset-fashion-mnist, or pass --input)"
                       % (os.path.join(folder, base), folder))


def read_idx(path: str, magic: int, ndim: int) -> np.ndarray:
    """Reads an idx file (gzipped or raw) of unsigned bytes.

    Args:
      path: the file.
      magic: expected magic number (0x803 images, 0x801 labels).
      ndim: expected number of dimensions.

    Returns:
      uint8 array of the header's shape.

    Raises:
      DatasetError: unreadable, wrong magic number or size.
    """
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError("%s: truncated or corrupt (%s)" % (path, e)) from None
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DatasetError("%s: %d bytes, too short for an idx file" % (path, len(raw)))
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise DatasetError("%s: idx magic number 0x%08x, expected 0x%08x (%s): not a "
                           "Fashion-MNIST/MNIST idx file of this kind"
                           % (path, found, magic, "images" if ndim == 3 else "labels"))
    dims = struct.unpack(">" + "I" * ndim, raw[4:head])
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) - head != size:
        raise DatasetError("%s: %d data bytes but the header's shape %s needs %d: truncated "
                           "or corrupt" % (path, len(raw) - head, list(dims), size))
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def _read_fashion_mnist(folder: str) -> _Source:
    if not os.path.isdir(folder):
        raise DatasetError("%s: no such folder: Fashion-MNIST idx files expected there "
                           "(apt-get install dataset-fashion-mnist, or pass --input)" % folder)
    arrays, labels = {}, {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ipath = _idx_path(folder, prefix + "-images-idx3-ubyte")
        lpath = _idx_path(folder, prefix + "-labels-idx1-ubyte")
        x = read_idx(ipath, 0x803, 3)
        y = read_idx(lpath, 0x801, 1).astype(np.int64)
        if x.shape[0] != y.shape[0]:
            raise DatasetError("%s: %d labels but %s has %d images"
                               % (lpath, y.shape[0], ipath, x.shape[0]))
        if y.size and y.max() >= len(FASHION_MNIST_CLASSES):
            raise DatasetError("%s: labels outside 0..9" % lpath)
        arrays[split], labels[split] = x[..., None], y
    return _Source(name="fashion_mnist", input=folder, class_names=list(FASHION_MNIST_CLASSES),
                   train_labels=labels["train"], test_labels=labels["test"],
                   take=lambda split, idx: np.ascontiguousarray(arrays[split][idx]),
                   train_desc=os.path.join(folder, "train-images-idx3-ubyte"),
                   test_desc=os.path.join(folder, "t10k-images-idx3-ubyte"), augment=False)


def _list_classes(root: str) -> Dict[str, List[str]]:
    classes = {}
    for name in sorted(os.listdir(root)):
        sub = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(sub):
            continue
        classes[name] = [os.path.join(sub, f) for f in sorted(os.listdir(sub))
                         if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return classes


def _read_folder(path: str, image_size: int) -> _Source:
    if not os.path.isdir(path):
        raise DatasetError("%s: no such folder (expected one subfolder of images per class)"
                           % path)
    from PIL import Image  # only this source needs Pillow
    train_root, test_root = path, None
    if os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test")):
        train_root, test_root = os.path.join(path, "train"), os.path.join(path, "test")
    train = _list_classes(train_root)
    if len(train) < 2:
        raise DatasetError("%s: has %d class subfolders, need at least 2 (one folder of "
                           "png/jpg images per class)" % (train_root, len(train)))
    names = list(train)
    test = None
    if test_root is not None:
        test = _list_classes(test_root)
        if sorted(test) != sorted(names):
            raise DatasetError("%s: class subfolders %s differ from %s's %s"
                               % (test_root, sorted(test), train_root, names))
    files = {"train": [f for c in names for f in train[c]]}
    train_y = np.array([i for i, c in enumerate(names) for _ in train[c]], dtype=np.int64)
    test_y = None
    if test is not None:
        files["test"] = [f for c in names for f in test[c]]
        test_y = np.array([i for i, c in enumerate(names) for _ in test[c]], dtype=np.int64)
    gray = True
    for f in files["train"] + files.get("test", []):
        try:
            with Image.open(f) as im:
                gray = gray and im.mode in _GRAY_MODES
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise DatasetError("%s: does not decode as an image (%s)" % (f, e)) from None
    mode = "L" if gray else "RGB"

    def take(split: str, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), image_size, image_size, 1 if gray else 3), dtype=np.uint8)
        for i, j in enumerate(idx):
            f = files[split][j]
            try:
                with Image.open(f) as im:
                    im = im.convert(mode).resize((image_size, image_size),
                                                 Image.Resampling.BILINEAR)
                    out[i] = np.asarray(im, dtype=np.uint8).reshape(out.shape[1:])
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise DatasetError("%s: does not decode as an image (%s)" % (f, e)) from None
        return out

    return _Source(name="folder", input=path, class_names=names, train_labels=train_y,
                   test_labels=test_y, take=take, train_desc=train_root,
                   test_desc=test_root if test_root else
                   "%s (images not used in the chunks)" % train_root, augment=not gray)


# --------------------------------------------------------------------------- building


def chunk_counts(images_per_class: int, num_chunks: int, num_classes: int) -> np.ndarray:
    """Images of each class in each chunk: int64 [num_chunks, num_classes].

    Every class gets ``images_per_class`` in total, spread over the chunks as
    evenly as possible; when it does not divide, the extra images rotate over
    the chunks so that chunk sizes also differ by at most one.
    """
    base, rem = divmod(images_per_class, num_chunks)
    counts = np.full((num_chunks, num_classes), base, dtype=np.int64)
    for c in range(num_classes):
        for j in range(rem):
            counts[(c * rem + j) % num_chunks, c] += 1
    return counts


def _select(src: _Source, num_chunks: int, images_per_class: int, test_per_class: int,
            seed: int) -> Tuple[List[np.ndarray], np.ndarray]:
    """Picks chunk and test indices, class-balanced and shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    num_classes = len(src.class_names)
    counts = chunk_counts(images_per_class, num_chunks, num_classes)
    chunk_parts: List[List[np.ndarray]] = [[] for _ in range(num_chunks)]
    leftover = []
    for c in range(num_classes):
        pool = rng.permutation(np.flatnonzero(src.train_labels == c))
        if len(pool) < images_per_class:
            raise DatasetError(
                "%s: class %r has %d images, fewer than --images_per_class %d (images of each "
                "class over all %d chunks); pass --images_per_class %d or less"
                % (src.train_desc, src.class_names[c], len(pool), images_per_class,
                   num_chunks, len(pool)))
        start = 0
        for k in range(num_chunks):
            chunk_parts[k].append(pool[start:start + counts[k, c]])
            start += counts[k, c]
        leftover.append(pool[images_per_class:])
    chunks = [rng.permutation(np.concatenate(parts)) for parts in chunk_parts]
    test_parts = []
    for c in range(num_classes):
        if src.test_labels is not None:
            pool = rng.permutation(np.flatnonzero(src.test_labels == c))
        else:
            pool = leftover[c]
        want = len(pool) if test_per_class == 0 else test_per_class
        if len(pool) == 0:
            raise DatasetError(
                "%s: class %r has no test images%s" % (
                    src.test_desc, src.class_names[c],
                    "" if src.test_labels is not None else
                    "; lower --images_per_class or add train/ and test/ subfolders"))
        if len(pool) < want:
            raise DatasetError(
                "%s: class %r has %d test images, fewer than --test_per_class %d; pass "
                "--test_per_class %d or less (0 = all available)"
                % (src.test_desc, src.class_names[c], len(pool), want, len(pool)))
        test_parts.append(pool[:want])
    return chunks, rng.permutation(np.concatenate(test_parts))


def build_dataset(source: str, input_path: str, output: str, num_chunks: int = 10,
                  images_per_class: int = 100, test_per_class: int = 100, seed: int = 0,
                  image_size: int = 32, log: Callable[[str], None] = print) -> Tuple[str, Dict]:
    """Reads a source and writes a dataset folder (the work of dataset_maker.py).

    Args:
      source: "cifar10", "fashion_mnist" or "folder".
      input_path: cifar-10-python.tar.gz or its extracted folder; the folder of
        the Fashion-MNIST idx files; or a folder of class subfolders (optionally
        train/ and test/).
      output: dataset folder to create.
      num_chunks: K >= 2 chunks; 0..K-2 train, K-1 validates.
      images_per_class: images of each class over all chunks (AutoDL Design's
        chunk_size); each chunk gets images_per_class / num_chunks of each class.
      test_per_class: held-out test images per class (0 = all available).
      seed: shuffling seed.
      image_size: side of the resized images (folder source only).
      log: one-line progress messages.

    Returns:
      ("created" or "unchanged", manifest).

    Raises:
      DatasetError: one line naming the file and the problem.
    """
    if source not in SOURCES:
        raise DatasetError("unknown source %r: use one of %s" % (source, ", ".join(SOURCES)))
    if num_chunks < 2:
        raise DatasetError("--num_chunks %d: need at least 2 (train + validation)" % num_chunks)
    if images_per_class < 1 or test_per_class < 0 or image_size < 1:
        raise DatasetError("--images_per_class, --image_size must be >= 1 and "
                           "--test_per_class >= 0")
    settings = {"num_chunks": num_chunks, "images_per_class": images_per_class,
                "test_per_class": test_per_class, "seed": seed,
                "image_size": image_size if source == "folder" else None}
    check_output(output, source, settings)
    log("Reading %s (%s)" % (input_path, source))
    if source == "cifar10":
        src = _read_cifar10(input_path)
    elif source == "fashion_mnist":
        src = _read_fashion_mnist(input_path)
    else:
        src = _read_folder(input_path, image_size)
    chunk_idx, test_idx = _select(src, num_chunks, images_per_class, test_per_class, seed)
    sizes = [len(c) for c in chunk_idx]
    all_train = src.take("train", np.concatenate(chunk_idx))
    bounds = np.cumsum([0] + sizes)
    chunks = [(all_train[bounds[k]:bounds[k + 1]], src.train_labels[chunk_idx[k]])
              for k in range(num_chunks)]
    test_split = "test" if src.test_labels is not None else "train"
    test_labels = (src.test_labels if src.test_labels is not None else src.train_labels)
    test = (src.take(test_split, test_idx), test_labels[test_idx])
    augment = src.augment if src.augment is not None else all_train.shape[-1] == 3
    status = write_dataset(output, chunks, test, src.class_names, src.name, settings, augment,
                           input_path=os.path.abspath(input_path))
    manifest = read_manifest(output)
    return status, manifest


def ensure_default_dataset(images_per_class: int, root: str = "./data",
                           fmnist_dir: str = FASHION_MNIST_DIR,
                           log: Callable[[str], None] = print) -> str:
    """Makes the embedded default dataset (real Fashion-MNIST) unless it is there.

    The dataset: 10 classes, ``images_per_class`` images of each class over 10
    chunks (AutoDL Design's meaning), seed 0, 100 test images per class, in
    ``root/fashion_mnist_<images_per_class>``. Prints one line about what it did.

    Returns:
      The dataset folder.

    Raises:
      DatasetError: the Fashion-MNIST files are missing or bad, or the folder
        holds something else.
    """
    path = os.path.join(root, "fashion_mnist_%d" % images_per_class)
    settings = {"num_chunks": DEFAULT_NUM_CHUNKS, "images_per_class": images_per_class,
                "test_per_class": DEFAULT_TEST_PER_CLASS, "seed": DEFAULT_SEED,
                "image_size": None}
    if check_output(path, "fashion_mnist", settings) is not None:
        log("Using the default dataset (real Fashion-MNIST, %d images per class) in %s"
            % (images_per_class, path))
        return path
    bases = [os.path.join(fmnist_dir, n) for n in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte")]
    if not all(os.path.isfile(b + ".gz") or os.path.isfile(b) for b in bases):
        raise DatasetError(
            "%s: Fashion-MNIST (the default dataset) is not installed: run "
            "'apt-get install dataset-fashion-mnist', or make a dataset with "
            "'python dataset_maker.py --source cifar10 --input cifar-10-python.tar.gz' and pass "
            "--data_path" % fmnist_dir)
    status, manifest = build_dataset("fashion_mnist", fmnist_dir, path,
                                     num_chunks=DEFAULT_NUM_CHUNKS,
                                     images_per_class=images_per_class,
                                     test_per_class=DEFAULT_TEST_PER_CLASS, seed=DEFAULT_SEED,
                                     log=lambda _: None)
    counts = [f["count"] for f in manifest["files"]]
    log("%s the default dataset (real Fashion-MNIST from %s: %d chunks of %d images, "
        "%d test images) in %s" % ("Prepared" if status == "created" else "Using",
                                   fmnist_dir, DEFAULT_NUM_CHUNKS, counts[0], counts[-1], path))
    return path
