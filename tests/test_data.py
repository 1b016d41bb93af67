"""Tests of trainer/data.py: writing, loading, checksums, augmentation, the default dataset."""
import gzip
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from trainer import data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = data.FASHION_MNIST_DIR


def _chunks(rng, num_chunks=4, per_class=3, classes=3, shape=(8, 8, 3)):
    """Class-balanced uint8 chunks whose channels have different statistics."""
    out = []
    for _ in range(num_chunks):
        labels = np.repeat(np.arange(classes), per_class).astype(np.int64)
        images = rng.integers(0, 256, size=(len(labels),) + shape).astype(np.float64)
        images *= np.linspace(0.3, 1.0, shape[2])  # channel c spread differs
        out.append((images.astype(np.uint8), labels))
    return out


def _write(tmp_path, name="ds", seed=0, settings=None, **kw):
    rng = np.random.default_rng(seed)
    chunks = _chunks(rng, **kw)
    test = _chunks(rng, num_chunks=1, **kw)[0]
    classes = kw.get("classes", 3)
    status = data.write_dataset(
        str(tmp_path / name), chunks, test, ["c%d" % i for i in range(classes)], "synthetic",
        settings if settings is not None else {"seed": seed}, augment=True)
    return str(tmp_path / name), chunks, test, status


def test_chunk_counts_even_and_uneven():
    even = data.chunk_counts(100, 10, 10)
    assert (even == 10).all()
    uneven = data.chunk_counts(7, 3, 4)
    assert (uneven.sum(axis=0) == 7).all()  # every class: images_per_class in total
    assert uneven.max() - uneven.min() <= 1
    sizes = uneven.sum(axis=1)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 28
    few = data.chunk_counts(3, 10, 4)  # fewer images than chunks: still spread
    assert (few.sum(axis=0) == 3).all() and few.sum(axis=1).max() - few.sum(axis=1).min() <= 1


def test_write_then_load_normalises_with_train_statistics(tmp_path):
    path, chunks, test, status = _write(tmp_path)
    assert status == "created"
    ds = data.load_dataset(path)
    assert ds.image_shape == (3, 8, 8) and ds.num_classes == 3 and ds.augment is True
    assert ds.class_names == ["c0", "c1", "c2"]
    assert ds.train_images.shape == (27, 3, 8, 8) and ds.train_images.dtype == np.float32
    assert ds.val_images.shape == (9, 3, 8, 8) and ds.test_images.shape == (9, 3, 8, 8)
    assert ds.train_labels.dtype == np.int64 and ds.train_labels.tolist() == np.concatenate(
        [c[1] for c in chunks[:-1]]).tolist()
    np.testing.assert_allclose(ds.train_images.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(ds.train_images.std(axis=(0, 2, 3)), 1, atol=1e-4)
    # The validation chunk uses the training statistics: check one pixel by hand.
    mean, std = np.array(ds.manifest["mean"]), np.array(ds.manifest["std"])
    raw = chunks[-1][0][4, 2, 5]  # image 4, row 2, column 5, all channels
    np.testing.assert_allclose(ds.val_images[4, :, 2, 5], (raw / 255.0 - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(ds.test_images[0, :, 0, 0], (test[0][0, 0, 0] / 255 - mean) / std,
                               rtol=1e-5)
    assert ds.manifest["std"][0] < ds.manifest["std"][2]  # channels really differ
    splits = [f["split"] for f in ds.manifest["files"]]
    assert splits == ["train"] * 3 + ["val", "test"]


def test_same_data_is_unchanged_other_data_is_refused(tmp_path):
    path, _, _, _ = _write(tmp_path)
    before = {f: os.path.getmtime(os.path.join(path, f)) for f in os.listdir(path)}
    assert _write(tmp_path)[3] == "unchanged"
    assert {f: os.path.getmtime(os.path.join(path, f)) for f in os.listdir(path)} == before
    with pytest.raises(data.DatasetError, match="same settings but other data"):
        _write(tmp_path, seed=1, settings={"seed": 0})  # other pixels, same settings
    with pytest.raises(data.DatasetError, match="seed=0 there, 1 asked"):
        _write(tmp_path, seed=1)
    # Nothing half-written next to it.
    assert sorted(os.listdir(tmp_path)) == ["ds"]


def test_equal_data_gives_equal_bytes(tmp_path):
    a = _write(tmp_path, name="a")[0]
    b = _write(tmp_path, name="b")[0]
    for f in sorted(os.listdir(a)):
        with open(os.path.join(a, f), "rb") as fa, open(os.path.join(b, f), "rb") as fb:
            assert fa.read() == fb.read(), f


def test_checksum_and_format_problems_are_reported(tmp_path):
    path = _write(tmp_path)[0]
    chunk = os.path.join(path, "chunk_2.npz")
    with open(chunk, "r+b") as f:
        f.seek(os.path.getsize(chunk) - 10)
        f.write(b"\x01")
    with pytest.raises(data.DatasetError) as err:
        data.load_dataset(path)
    assert "chunk_2.npz" in str(err.value) and "sha256" in str(err.value)
    assert "\n" not in str(err.value)
    os.remove(chunk)
    with pytest.raises(data.DatasetError, match="chunk_2.npz: missing"):
        data.load_dataset(path)
    mpath = os.path.join(path, "manifest.json")
    with open(mpath) as f:
        manifest = json.load(f)
    manifest["format"] = "something/else"
    with open(mpath, "w") as f:
        json.dump(manifest, f)
    with pytest.raises(data.DatasetError, match="manifest.json: format 'something/else'"):
        data.load_dataset(path)
    with open(mpath, "w") as f:
        f.write("{not json")
    with pytest.raises(data.DatasetError, match="manifest.json: not valid JSON"):
        data.load_dataset(path)
    os.remove(mpath)
    with pytest.raises(data.DatasetError, match="manifest.json: missing"):
        data.load_dataset(path)
    with pytest.raises(data.DatasetError, match="no such dataset folder"):
        data.load_dataset(str(tmp_path / "nowhere"))


def _slow_augment(images, offsets, flips, pad):
    """The obvious per-image version of augment_batch, given its random draws."""
    n, c, h, w = images.shape
    out = np.empty_like(images)
    for i in range(n):
        padded = np.zeros((c, h + 2 * pad, w + 2 * pad), images.dtype)
        padded[:, pad:pad + h, pad:pad + w] = images[i]
        crop = padded[:, offsets[i, 0]:offsets[i, 0] + h, offsets[i, 1]:offsets[i, 1] + w]
        out[i] = crop[:, :, ::-1] if flips[i] else crop
    return out


@pytest.mark.parametrize("pad", [4, 2])
def test_augment_batch_matches_obvious_version(pad):
    images = np.random.default_rng(1).normal(size=(64, 3, 12, 10)).astype(np.float32)
    keep = images.copy()
    out = data.augment_batch(images, np.random.default_rng(7), pad=pad)
    rng = np.random.default_rng(7)  # same draws, in the documented order
    offsets = rng.integers(0, 2 * pad + 1, size=(64, 2))
    flips = rng.random(64) < 0.5
    assert out.shape == images.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, _slow_augment(images, offsets, flips, pad))
    np.testing.assert_array_equal(images, keep)  # input untouched
    assert 0 < flips.sum() < 64 and (offsets != pad).any()
    moved = [not np.array_equal(out[i], images[i]) for i in range(64)]
    assert sum(moved) > 32  # most images really change
    assert (out == 0).any()  # zero padding shows up


def test_augment_batch_flip_only_without_padding():
    images = np.arange(2 * 1 * 3 * 4, dtype=np.float32).reshape(2, 1, 3, 4)
    seen = set()
    for seed in range(20):
        out = data.augment_batch(images, np.random.default_rng(seed), pad=0)
        for i in range(2):
            if np.array_equal(out[i], images[i]):
                seen.add("same")
            else:
                np.testing.assert_array_equal(out[i], images[i, :, :, ::-1])
                seen.add("flipped")
    assert seen == {"same", "flipped"}


def _idx(path, array, magic, gz):
    raw = struct.pack(">I", magic) + struct.pack(">" + "I" * array.ndim, *array.shape)
    raw += array.astype(np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(raw)


def _fake_fmnist(folder, per_class=12, test_per_class=3):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", per_class), ("t10k", test_per_class)):
        labels = np.tile(np.arange(10), n)
        images = rng.integers(0, 256, size=(len(labels), 28, 28))
        _idx(os.path.join(folder, prefix + "-images-idx3-ubyte.gz"), images, 0x803, True)
        _idx(os.path.join(folder, prefix + "-labels-idx1-ubyte.gz"), labels, 0x801, True)


def test_ensure_default_dataset_builds_once(tmp_path):
    fm = str(tmp_path / "fm")
    _fake_fmnist(fm, per_class=20, test_per_class=100)
    lines = []
    path = data.ensure_default_dataset(10, root=str(tmp_path / "data"), fmnist_dir=fm,
                                       log=lines.append)
    assert path == os.path.join(str(tmp_path / "data"), "fashion_mnist_10")
    assert len(lines) == 1 and lines[0].startswith("Prepared") and path in lines[0]
    manifest = data.read_manifest(path)
    assert manifest["settings"] == {"num_chunks": 10, "images_per_class": 10,
                                    "test_per_class": 100, "seed": 0, "image_size": None}
    assert [f["per_class"] for f in manifest["files"][:10]] == [[1] * 10] * 10
    assert manifest["augment"] is False and manifest["image_shape_hwc"] == [28, 28, 1]
    mtime = os.path.getmtime(os.path.join(path, "manifest.json"))
    lines.clear()
    assert data.ensure_default_dataset(10, root=str(tmp_path / "data"), fmnist_dir=fm,
                                       log=lines.append) == path
    assert len(lines) == 1 and lines[0].startswith("Using")
    assert os.path.getmtime(os.path.join(path, "manifest.json")) == mtime


def test_ensure_default_dataset_without_source_says_how_to_get_data(tmp_path):
    with pytest.raises(data.DatasetError) as err:
        data.ensure_default_dataset(10, root=str(tmp_path / "data"),
                                    fmnist_dir=str(tmp_path / "missing"))
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--data_path" in msg
    assert "dataset_maker.py" in msg and "\n" not in msg
    assert not os.path.exists(tmp_path / "data")


def test_import_is_numpy_only():
    code = ("import sys; import trainer.data; "
            "bad = [m for m in ('paddle', 'parl', 'PIL') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="real Fashion-MNIST not installed")
def test_real_fashion_mnist(tmp_path):
    names = {n[:-3] if n.endswith(".gz") else n: n for n in os.listdir(FMNIST)}
    images = data.read_idx(os.path.join(FMNIST, names["train-images-idx3-ubyte"]), 0x803, 3)
    labels = data.read_idx(os.path.join(FMNIST, names["train-labels-idx1-ubyte"]), 0x801, 1)
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    assert np.bincount(labels).tolist() == [6000] * 10
    lines = []
    path = data.ensure_default_dataset(20, root=str(tmp_path), log=lines.append)
    assert len(lines) == 1
    ds = data.load_dataset(path)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert ds.image_shape == (1, 28, 28) and ds.num_classes == 10 and ds.augment is False
    assert np.bincount(ds.train_labels).tolist() == [18] * 10
    assert np.bincount(ds.val_labels).tolist() == [2] * 10
    assert np.bincount(ds.test_labels).tolist() == [100] * 10
    assert 0.2 < ds.manifest["mean"][0] < 0.4  # real clothes on black, not noise (0.5)
    # Trousers (1) are narrow: their mean image is darker at the sides than shirts (0).
    raw = ds.train_images * ds.manifest["std"][0] + ds.manifest["mean"][0]
    trousers = raw[ds.train_labels == 1].mean(axis=0)[0]
    shirts = raw[ds.train_labels == 0].mean(axis=0)[0]
    assert trousers[:, 3].mean() < shirts[:, 3].mean()
