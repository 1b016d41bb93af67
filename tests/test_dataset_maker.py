"""Tests of dataset_maker.py and the sources in trainer/data.py, on small files made here."""
import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from trainer import data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(REPO, ".venv", "bin", "python")
if not os.path.exists(PYTHON):
    PYTHON = sys.executable
NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
         b"ship", b"truck"]


def _cifar_images(labels, batch):
    """[n, 3072] rows as R, G, B planes: R = 10 * label, G = batch, B = 200 + row index."""
    n = len(labels)
    planes = np.zeros((n, 3, 32, 32), np.uint8)
    planes[:, 0] = (10 * np.asarray(labels))[:, None, None]
    planes[:, 1] = batch
    planes[:, 2] = (200 + np.arange(n) % 50)[:, None, None]
    return planes.reshape(n, 3072)


def _batch(per_class, batch):
    labels = [int(v) for v in np.tile(np.arange(10), per_class)]
    return {b"batch_label": b"batch %d" % batch, b"labels": labels,
            b"data": _cifar_images(labels, batch),
            b"filenames": [b"img_%d_%d.png" % (batch, i) for i in range(len(labels))]}


def _cifar_files(per_class=4, test_per_class=3):
    files = {"data_batch_%d" % i: pickle.dumps(_batch(per_class, i), protocol=2)
             for i in range(1, 6)}
    files["test_batch"] = pickle.dumps(_batch(test_per_class, 9), protocol=2)
    files["batches.meta"] = pickle.dumps({b"label_names": NAMES, b"num_vis": 3072,
                                          b"num_cases_per_batch": 10 * per_class}, protocol=2)
    return files


def _tarball(path, files, folder="cifar-10-batches-py"):
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(folder + "/" + name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return str(path)


def _folder(path, files):
    os.makedirs(path, exist_ok=True)
    for name, raw in files.items():
        with open(os.path.join(path, name), "wb") as f:
            f.write(raw)
    return str(path)


def _idx(path, array, magic, gz):
    raw = struct.pack(">I", magic) + struct.pack(">" + "I" * array.ndim, *array.shape)
    raw += np.asarray(array).astype(np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(raw)
    return str(path)


def _fmnist(folder, gz=True, per_class=6, test_per_class=2):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(3)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", per_class), ("t10k", test_per_class)):
        labels = np.tile(np.arange(10), n)
        images = rng.integers(0, 256, size=(len(labels), 28, 28))
        _idx(os.path.join(folder, prefix + "-images-idx3-ubyte" + ext), images, 0x803, gz)
        _idx(os.path.join(folder, prefix + "-labels-idx1-ubyte" + ext), labels, 0x801, gz)
    return str(folder)


def _build(src, inp, out, **kw):
    kw.setdefault("num_chunks", 5)
    kw.setdefault("images_per_class", 10)
    kw.setdefault("test_per_class", 3)
    return data.build_dataset(src, str(inp), str(out), log=lambda _: None, **kw)


def _checksums(manifest):
    return [f["sha256"] for f in manifest["files"]]


def _only(parent, *names):
    """Asserts parent holds exactly these entries (no output, no temp folders)."""
    assert sorted(os.listdir(parent)) == sorted(names)


# ------------------------------------------------------------------- format and balance


def test_cifar_tarball_chunks_are_balanced_and_correct(tmp_path):
    tar = _tarball(tmp_path / "c.tar.gz", _cifar_files())
    status, manifest = _build("cifar10", tar, tmp_path / "out")
    assert status == "created"
    assert manifest["class_names"][0] == "airplane" and manifest["class_names"][9] == "truck"
    assert manifest["image_shape_hwc"] == [32, 32, 3] and manifest["augment"] is True
    assert manifest["format"] == "autodl-design-dataset/1" and manifest["source"] == "cifar10"
    files = manifest["files"]
    assert [f["name"] for f in files] == ["chunk_%d.npz" % i for i in range(5)] + ["test.npz"]
    assert [f["split"] for f in files] == ["train"] * 4 + ["val", "test"]
    for f in files[:5]:
        assert f["per_class"] == [2] * 10 and f["count"] == 20
    assert files[5]["per_class"] == [3] * 10
    for f in files:
        with np.load(tmp_path / "out" / f["name"], allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
        assert images.dtype == np.uint8 and labels.dtype == np.int64
        # R, G, B planes became channels: R encodes the label, G the batch.
        np.testing.assert_array_equal(images[:, 0, 0, 0], 10 * labels)
        batches = {9} if f["split"] == "test" else {1, 2, 3, 4, 5}
        assert set(images[:, 5, 7, 1].tolist()) <= batches
        assert (images[:, :, :, 2] >= 200).all()
        assert labels.tolist() != sorted(labels.tolist())  # shuffled
    ds = data.load_dataset(str(tmp_path / "out"))
    assert ds.train_images.shape == (80, 3, 32, 32) and ds.val_images.shape == (20, 3, 32, 32)
    assert ds.test_images.shape == (30, 3, 32, 32)


def test_cifar_folder_input_equals_tarball(tmp_path):
    files = _cifar_files()
    tar = _tarball(tmp_path / "c.tar.gz", files)
    extracted = _folder(tmp_path / "x" / "cifar-10-batches-py", files)
    _, a = _build("cifar10", tar, tmp_path / "a")
    _, b = _build("cifar10", extracted, tmp_path / "b")
    _, c = _build("cifar10", tmp_path / "x", tmp_path / "c")  # the parent folder works too
    assert _checksums(a) == _checksums(b) == _checksums(c)


def test_seed_decides_the_output(tmp_path):
    tar = _tarball(tmp_path / "c.tar.gz", _cifar_files())
    _, a = _build("cifar10", tar, tmp_path / "a", seed=5)
    _, b = _build("cifar10", tar, tmp_path / "b", seed=5)
    _, c = _build("cifar10", tar, tmp_path / "c", seed=6)
    assert _checksums(a) == _checksums(b)
    assert all(x != y for x, y in zip(_checksums(a), _checksums(c)))
    for f in os.listdir(tmp_path / "a"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_uneven_images_per_class_stays_balanced(tmp_path):
    tar = _tarball(tmp_path / "c.tar.gz", _cifar_files())
    _, m = _build("cifar10", tar, tmp_path / "out", images_per_class=7, num_chunks=3)
    per = np.array([f["per_class"] for f in m["files"][:3]])
    assert (per.sum(axis=0) == 7).all() and per.max() - per.min() <= 1
    sizes = per.sum(axis=1)
    assert sizes.max() - sizes.min() <= 1


def test_fashion_mnist_gz_and_raw_agree(tmp_path):
    _, a = _build("fashion_mnist", _fmnist(tmp_path / "gz", gz=True), tmp_path / "a",
                  images_per_class=5, test_per_class=2)
    _, b = _build("fashion_mnist", _fmnist(tmp_path / "raw", gz=False), tmp_path / "b",
                  images_per_class=5, test_per_class=2)
    assert _checksums(a) == _checksums(b)
    assert a["image_shape_hwc"] == [28, 28, 1] and a["augment"] is False
    assert a["class_names"][1] == "Trouser"
    assert [f["per_class"] for f in a["files"][:5]] == [[1] * 10] * 5


def _png(path, size, color=True, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if color else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8)).save(path)


def test_folder_source_resizes_and_uses_test_folder(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for c in ("cats", "dogs", "owls"):
            os.makedirs(tmp_path / "in" / split / c)
            for i in range(n):
                ext = "png" if i % 2 else "jpg"
                _png(tmp_path / "in" / split / c / ("%d.%s" % (i, ext)), (20 + 7 * i, 15 + i))
    _, m = _build("folder", tmp_path / "in", tmp_path / "out", num_chunks=2,
                  images_per_class=4, test_per_class=0, image_size=12)
    assert m["class_names"] == ["cats", "dogs", "owls"]
    assert m["image_shape_hwc"] == [12, 12, 3] and m["augment"] is True
    assert m["settings"]["image_size"] == 12
    assert [f["per_class"] for f in m["files"]] == [[2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert data.load_dataset(str(tmp_path / "out")).train_images.shape == (6, 3, 12, 12)


def test_folder_source_grayscale_and_leftover_test(tmp_path):
    for c in ("a", "b"):
        os.makedirs(tmp_path / "in" / c)
        for i in range(5):
            _png(tmp_path / "in" / c / ("%d.png" % i), (9, 9), color=False, seed=i)
    _, m = _build("folder", tmp_path / "in", tmp_path / "out", num_chunks=2,
                  images_per_class=4, test_per_class=1, image_size=6)
    assert m["image_shape_hwc"] == [6, 6, 1] and m["augment"] is False
    assert m["files"][-1]["per_class"] == [1, 1]


# ------------------------------------------------------------------- errors (library)


def _error(tmp_path, src, inp, **kw):
    with pytest.raises(data.DatasetError) as err:
        _build(src, inp, tmp_path / "out", **kw)
    msg = str(err.value)
    assert "\n" not in msg
    assert not os.path.exists(tmp_path / "out")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".out")]  # no temp folder
    return msg


def test_cifar_errors(tmp_path):
    files = _cifar_files()
    tar = _tarball(tmp_path / "c.tar.gz", files)
    msg = _error(tmp_path, "cifar10", tmp_path / "missing.tar.gz")
    assert "missing.tar.gz: missing" in msg and "cifar-10-python.tar.gz" in msg
    raw = open(tar, "rb").read()
    (tmp_path / "cut.tar.gz").write_bytes(raw[:len(raw) // 2])
    assert "cut.tar.gz: truncated or corrupt tarball" in _error(tmp_path, "cifar10",
                                                                tmp_path / "cut.tar.gz")
    (tmp_path / "junk.tar.gz").write_bytes(os.urandom(5000))
    assert "junk.tar.gz: truncated or corrupt" in _error(tmp_path, "cifar10",
                                                         tmp_path / "junk.tar.gz")
    c100 = _tarball(tmp_path / "c100.tar.gz", {"train": b"x", "test": b"y", "meta": b"z"},
                    folder="cifar-100-python")
    assert "c100.tar.gz: holds no cifar-10-batches-py/" in _error(tmp_path, "cifar10", c100)
    msg = _error(tmp_path, "cifar10", tar, images_per_class=21)
    assert "c.tar.gz" in msg and "has 20 images" in msg and "--images_per_class 20" in msg
    msg = _error(tmp_path, "cifar10", tar, test_per_class=4)
    assert "test_batch" in msg and "--test_per_class 3" in msg


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch %s" % _Evil.target,))


def test_cifar_pickle_with_foreign_code_is_refused(tmp_path):
    _Evil.target = str(tmp_path / "pwned")
    files = _cifar_files()
    files["data_batch_3"] = pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2)
    tar = _tarball(tmp_path / "evil.tar.gz", files)
    msg = _error(tmp_path, "cifar10", tar)
    assert "data_batch_3" in msg and "refusing to load global" in msg
    assert not os.path.exists(_Evil.target)
    files = _cifar_files()
    files["data_batch_2"] = pickle.dumps({b"labels": [1, 2]}, protocol=2)
    msg = _error(tmp_path, "cifar10", _tarball(tmp_path / "odd.tar.gz", files))
    assert "data_batch_2" in msg and "not a CIFAR-10 batch" in msg
    files = _cifar_files()
    bad = _batch(4, 1)
    bad[b"labels"][0] = 12
    files["data_batch_1"] = pickle.dumps(bad, protocol=2)
    msg = _error(tmp_path, "cifar10", _folder(tmp_path / "f", files))
    assert "data_batch_1" in msg and "labels outside 0..9" in msg


def test_idx_errors(tmp_path):
    fm = _fmnist(tmp_path / "fm", gz=False)
    path = os.path.join(fm, "train-labels-idx1-ubyte")
    raw = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x803) + raw[4:])
    msg = _error(tmp_path, "fashion_mnist", fm, images_per_class=5, test_per_class=2)
    assert "train-labels-idx1-ubyte: idx magic number 0x00000803, expected 0x00000801" in msg
    with open(path, "wb") as f:
        f.write(raw[:-7])
    msg = _error(tmp_path, "fashion_mnist", fm, images_per_class=5, test_per_class=2)
    assert "train-labels-idx1-ubyte: 53 data bytes but the header's shape [60] needs 60" in msg
    fmz = _fmnist(tmp_path / "fmz", gz=True)
    gz = os.path.join(fmz, "t10k-images-idx3-ubyte.gz")
    raw = open(gz, "rb").read()
    with open(gz, "wb") as f:
        f.write(raw[:len(raw) // 2])
    msg = _error(tmp_path, "fashion_mnist", fmz, images_per_class=5, test_per_class=2)
    assert "t10k-images-idx3-ubyte.gz: truncated or corrupt" in msg
    os.remove(gz)
    msg = _error(tmp_path, "fashion_mnist", fmz, images_per_class=5, test_per_class=2)
    assert "t10k-images-idx3-ubyte(.gz): missing" in msg
    msg = _error(tmp_path, "fashion_mnist", _fmnist(tmp_path / "ok"), images_per_class=7)
    assert "'T-shirt/top' has 6 images" in msg


def test_image_errors(tmp_path):
    for c in ("a", "b"):
        os.makedirs(tmp_path / "in" / c)
        for i in range(3):
            _png(tmp_path / "in" / c / ("%d.png" % i), (10, 10))
    kw = dict(num_chunks=2, images_per_class=2, test_per_class=1)
    good = (tmp_path / "in" / "b" / "1.png").read_bytes()
    (tmp_path / "in" / "b" / "1.png").write_bytes(good[:len(good) // 2])  # truncated
    msg = _error(tmp_path, "folder", tmp_path / "in", **kw)
    assert os.path.join("in", "b", "1.png") + ": does not decode" in msg
    (tmp_path / "in" / "b" / "1.png").write_bytes(b"not a png at all")
    msg = _error(tmp_path, "folder", tmp_path / "in", **kw)
    assert os.path.join("in", "b", "1.png") + ": does not decode" in msg
    (tmp_path / "in" / "b" / "1.png").write_bytes(good)
    msg = _error(tmp_path, "folder", tmp_path / "in", num_chunks=2, images_per_class=4)
    assert "class 'a' has 3 images" in msg and "--images_per_class 3" in msg


def test_output_holding_something_else(tmp_path):
    tar = _tarball(tmp_path / "c.tar.gz", _cifar_files())
    out = tmp_path / "out"
    _build("cifar10", tar, out)
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    status, _ = _build("cifar10", tar, out)
    assert status == "unchanged"
    with pytest.raises(data.DatasetError, match="different dataset.*seed=0 there, 1 asked"):
        _build("cifar10", tar, out, seed=1)
    other = _tarball(tmp_path / "other.tar.gz", _cifar_files(per_class=5))
    with pytest.raises(data.DatasetError, match="same settings but other data"):
        _build("cifar10", other, out)
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
    _only(tmp_path, "c.tar.gz", "other.tar.gz", "out")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    with pytest.raises(data.DatasetError, match="not a dataset folder"):
        _build("cifar10", tar, tmp_path / "stuff")
    (tmp_path / "empty").mkdir()
    assert _build("cifar10", tar, tmp_path / "empty")[0] == "created"


# ------------------------------------------------------------------- the command line


def _run(*args):
    return subprocess.run([PYTHON, os.path.join(REPO, "dataset_maker.py")] + list(args),
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_cli_builds_then_says_unchanged(tmp_path):
    tar = _tarball(tmp_path / "c.tar.gz", _cifar_files(per_class=2))
    args = ["--source", "cifar10", "--input", tar, "--output", str(tmp_path / "out"),
            "--images_per_class", "10", "--test_per_class", "2"]
    first = _run(*args)
    assert first.returncode == 0, first.stderr
    assert "10 chunks of 10 images (9 train + 1 validation), 20 test images" in first.stdout
    second = _run(*args)
    assert second.returncode == 0 and "already holds this dataset" in second.stdout
    third = _run(*(args + ["--seed", "3"]))
    assert third.returncode == 2
    assert third.stderr.strip().count("\n") == 0 and "seed=0 there, 3 asked" in third.stderr


@pytest.mark.parametrize("problem", ["truncated", "magic", "image"])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, problem):
    if problem == "truncated":
        tar = _tarball(tmp_path / "c.tar.gz", _cifar_files(per_class=2))
        raw = open(tar, "rb").read()
        (tmp_path / "c.tar.gz").write_bytes(raw[:len(raw) * 2 // 3])
        args, culprit = ["--source", "cifar10", "--input", tar], tar
    elif problem == "magic":
        fm = _fmnist(tmp_path / "fm")
        culprit = _idx(os.path.join(fm, "train-images-idx3-ubyte.gz"), np.zeros((3, 2, 2)),
                       0x801, True)
        args = ["--source", "fashion_mnist", "--input", fm]
    else:
        for c in ("a", "b"):
            os.makedirs(tmp_path / "in" / c)
            for i in range(2):
                _png(tmp_path / "in" / c / ("%d.png" % i), (8, 8))
        culprit = str(tmp_path / "in" / "a" / "1.png")
        with open(culprit, "wb") as f:
            f.write(b"\x89PNG garbage")
        args = ["--source", "folder", "--input", str(tmp_path / "in")]
    before = sorted(os.listdir(tmp_path))
    out = tmp_path / "new" / "deeper" / "out"
    result = _run(*(args + ["--output", str(out), "--num_chunks", "2",
                            "--images_per_class", "2", "--test_per_class", "1"]))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("dataset_maker.py: error: " + culprit + ":")
    assert sorted(os.listdir(tmp_path)) == before  # no output, no temp, no parent folders
