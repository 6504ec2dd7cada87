"""MNIST and Fashion-MNIST: find the IDX files, check them, and batch them with grain.

Both datasets are the same format: four IDX files (train/test images and labels), usually
gzipped. :func:`locate` finds them in this order:

1. ``data_dir``, if given;
2. the cache directory (``$FLAX_CYCLIC_DATA`` or ``~/.cache/flax_cyclic/datasets/<name>``);
3. a download from the standard public mirrors into the cache, each file checked against
   its published SHA-256 (where a network is reachable);
4. Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``).

With none of them, :class:`DataError` lists the options. Every file is checked when read: the
gzip checksum, the IDX magic number, the shape and the exact payload length, and labels
in 0..9, so a truncated or damaged file is a clear error naming the file, never a crash deep
in NumPy. The train order is a grain shuffle seeded by ``seed`` and the epoch: deterministic,
so a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence

import grain
import numpy as np

logger = logging.getLogger("flax_cyclic.examples.mnist")

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset's files come from and what they must hold."""

    name: str
    mirrors: tuple[str, ...]
    sha256: dict[str, str]  # of the published .gz files
    debian_dir: str | None = None
    debian_package: str | None = None


FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}

DATASETS = {
    "mnist": DatasetInfo(
        name="mnist",
        mirrors=(
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ),
        sha256={
            "train-images-idx3-ubyte.gz": (
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
            ),
            "train-labels-idx1-ubyte.gz": (
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
            ),
            "t10k-images-idx3-ubyte.gz": (
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
            ),
        },
    ),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256={
            "train-images-idx3-ubyte.gz": (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
            ),
            "train-labels-idx1-ubyte.gz": (
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
            ),
            "t10k-images-idx3-ubyte.gz": (
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
            ),
        },
        debian_dir="/usr/share/datasets/fashion-mnist",
        debian_package="dataset-fashion-mnist",
    ),
}


class DataError(RuntimeError):
    """The data cannot be found, or a file is damaged."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 ``(n, 28, 28)``, ``labels`` int32 ``(n,)``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def cache_dir(name: str) -> pathlib.Path:
    """The cache directory of dataset ``name``."""
    root = os.environ.get("FLAX_CYCLIC_DATA")
    base = (
        pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "flax_cyclic" / "datasets"
    )
    return base / name


def _file_names() -> list[str]:
    return [name for images, labels, _ in FILES.values() for name in (images, labels)]


def _find(directory: pathlib.Path, name: str) -> pathlib.Path | None:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _complete(directory: pathlib.Path | None) -> bool:
    return directory is not None and all(_find(directory, n) for n in _file_names())


def locate(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    timeout: float = 20.0,
) -> pathlib.Path:
    """The directory holding the four IDX files of ``dataset`` (see the module docstring).

    Args:
        dataset: ``'mnist'`` or ``'fashion_mnist'``.
        data_dir: A directory to look in first.
        download: Whether to try the public mirrors.
        timeout: Seconds to wait for a mirror.

    Raises:
        ValueError: For an unknown dataset.
        DataError: If the files are nowhere, with the options to get them.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got dataset={dataset!r}.")
    info = DATASETS[dataset]
    looked = []
    for directory in (pathlib.Path(data_dir) if data_dir else None, cache_dir(dataset)):
        if directory is None:
            continue
        looked.append(str(directory))
        if _complete(directory):
            return directory
    failures = []
    if download:
        target = cache_dir(dataset)
        try:
            _download(info, target, timeout)
            return target
        except DataError as error:
            failures.append(str(error))
    if info.debian_dir:
        looked.append(info.debian_dir)
        if _complete(pathlib.Path(info.debian_dir)):
            logger.info("Using the %s files of Debian's %s.", dataset, info.debian_package)
            return pathlib.Path(info.debian_dir)
    options = [
        f"put the four IDX files ({', '.join(_file_names())}, gzipped or not) in a directory "
        "and pass --config.data_dir=DIR",
        f"connect to the internet: they are downloaded into {cache_dir(dataset)} and checked "
        "against their SHA-256",
    ]
    if info.debian_package:
        options.append(
            f"on Debian or Ubuntu: sudo apt-get install {info.debian_package} "
            f"(files in {info.debian_dir})"
        )
    else:
        options.append(
            "use --config.dataset=fashion_mnist, which Debian and Ubuntu package as "
            "dataset-fashion-mnist"
        )
    raise DataError(
        f"No {dataset} data: looked in {', '.join(looked)}"
        + (f"; download failed ({'; '.join(failures)})" if failures else "")
        + ". To get it: "
        + "; or ".join(options)
        + "."
    )


def _download(info: DatasetInfo, target: pathlib.Path, timeout: float) -> None:
    """Downloads the four ``.gz`` files into ``target``, each checked against its SHA-256."""
    for file_name, expected in info.sha256.items():
        destination = target / file_name
        if destination.is_file() and _sha256(destination) == expected:
            continue
        errors = []
        for mirror in info.mirrors:
            try:
                _fetch(mirror + file_name, destination, expected, timeout)
                break
            except (OSError, urllib.error.URLError, DataError) as error:
                errors.append(f"{mirror}: {getattr(error, 'reason', error)}")
        else:
            raise DataError(f"{file_name} from no mirror ({'; '.join(errors)})")


def _fetch(url: str, destination: pathlib.Path, expected: str, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        logger.info("Downloading %s", url)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=destination.parent, delete=False) as part:
            shutil.copyfileobj(response, part)
    partial = pathlib.Path(part.name)
    digest = _sha256(partial)
    if digest != expected:
        partial.unlink()
        raise DataError(f"SHA-256 mismatch for {url}: got {digest}, expected {expected}")
    os.replace(partial, destination)  # complete files only, never a partial one


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_idx(path: str | os.PathLike, magic: int, shape: Sequence[int] | None = None) -> np.ndarray:
    """Reads an IDX file of unsigned bytes (gzipped if it ends in ``.gz``), checking it.

    Args:
        path: The file.
        magic: ``2051`` for images, ``2049`` for labels.
        shape: The expected shape after the item count, e.g. ``(28, 28)``; ``None``: any.

    Raises:
        DataError: If the file is truncated or damaged, or not the expected IDX file.
    """
    path = pathlib.Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as file:
            data = file.read()
    except (EOFError, OSError, zlib.error) as error:
        raise DataError(
            f"{path} is damaged ({error}). Delete it: it is fetched again, or get a fresh copy."
        ) from None
    if len(data) < 8:
        raise DataError(f"{path} is truncated: {len(data)} bytes, not even an IDX header.")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes with magic number {magic} "
            f"(found {found}); it is damaged or another file."
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if shape is not None and tuple(dims[1:]) != tuple(shape):
        raise DataError(f"{path} holds items of shape {dims[1:]}, not {list(shape)}.")
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(
            f"{path} is truncated or damaged: {len(data)} bytes where its header "
            f"({dims}) needs {expected}."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_split(directory: str | os.PathLike, split: str) -> Split:
    """Reads and checks one split (``'train'`` or ``'test'``) of the files in ``directory``."""
    directory = pathlib.Path(directory)
    images_name, labels_name, expected = FILES[split]
    paths = {name: _find(directory, name) for name in (images_name, labels_name)}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        raise DataError(f"{directory} lacks {missing} (gzipped or not).")
    images = read_idx(paths[images_name], IMAGE_MAGIC, (28, 28))
    labels = read_idx(paths[labels_name], LABEL_MAGIC, ())
    if len(images) != len(labels):
        raise DataError(
            f"{directory}: {len(images)} {split} images but {len(labels)} labels; the files "
            "do not belong together."
        )
    if len(images) != expected:
        logger.info(
            "%s: %d %s examples (the full split has %d).", directory, len(images), split, expected
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(f"{paths[labels_name]} holds label {labels.max()}, outside 0..9.")
    return Split(images=images, labels=labels.astype(np.int32))


def _normalize(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "image": (batch["image"].astype(np.float32) / 255.0)[..., None],
        "label": batch["label"],
    }


def train_batches(
    split: Split, batch_size: int, seed: int, subset: int = -1
) -> Callable[[int], grain.MapDataset]:
    """A function ``epoch -> batches``: the first ``subset`` examples, shuffled per epoch.

    Shuffling is grain's, seeded by ``seed + epoch``; incomplete batches are dropped.
    """
    count = len(split) if subset < 0 else min(subset, len(split))
    records = grain.MapDataset.range(count).map(
        lambda i: {"image": split.images[i], "label": split.labels[i]}
    )

    def epoch(index: int) -> grain.MapDataset:
        shuffled = records.shuffle(seed=seed + index)
        return shuffled.batch(batch_size, drop_remainder=True).map(_normalize)

    return epoch


def eval_batches(split: Split, batch_size: int) -> list[dict[str, np.ndarray]]:
    """The whole split in order, in batches (the last one smaller if it must be)."""
    return [
        _normalize(
            {"image": split.images[i : i + batch_size], "label": split.labels[i : i + batch_size]}
        )
        for i in range(0, len(split), batch_size)
    ]


if __name__ == "__main__":
    # `python examples/mnist/input_pipeline.py DATASET [DATA_DIR]`: finds (or downloads) the
    # data and says where; exits 1 with the options if there is none (used by `make demo`).
    import sys

    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    try:
        found = locate(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    except DataError as error:
        print(error, file=sys.stderr)
        sys.exit(1)
    print(f"{sys.argv[1]}: {found}")
