"""MNIST and Fashion-MNIST from their IDX files, downloaded with verified checksums when missing, loaded
whole onto the training device as uint8.

The data root is `data.root` in the experiment file, else the `RLGEN_DATA` environment variable, else
`~/.cache/rlgen/data`; each dataset lives in its own folder there (`mnist/`, `fashion_mnist/`) as the
four IDX files, plain or gzip-compressed. A file counts as genuine when its bytes have the official
.gz digest or its decompressed content has the official content digest (re-compressed copies pass).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, NamedTuple, Optional

import numpy as np
import torch

from core.errors import UserError
from core.registry import unknown_name_message
from core.sampling import check_binarization, fixed_binarization, prepare

IMAGES_MAGIC = 2051  # IDX: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # IDX: unsigned bytes, 1 dimension


@dataclass
class DataConfig:
    """Which image dataset, where its files are, how it is split and binarized."""

    name: str = "mnist"  # mnist | fashion_mnist
    root: Optional[str] = None  # data root; null: $RLGEN_DATA, else ~/.cache/rlgen/data
    validation_size: int = 0  # > 0: hold the last N training images out and evaluate on them, not on test
    binarize: str = "dynamic"  # dynamic (fresh Bernoulli draw per batch) | fixed | threshold | none
    threshold: float = 0.5  # grey level above which a pixel is on, for `threshold`
    fixed_seed: int = 0  # seed of the one Bernoulli draw used by `fixed` and by every evaluation set
    download: bool = True  # fetch missing files from the mirrors
    mirrors: List[str] = field(default_factory=list)  # base URLs tried first (file:// works); then the usual ones


class IdxFile(NamedTuple):
    """One file of a dataset with its official digests (MD5 of the .gz, and of the content where known)."""

    name: str  # as published, ending in .gz
    gz_md5: str
    content_md5: Optional[str]


class DatasetSpec(NamedTuple):
    folder: str
    mirrors: tuple[str, ...]
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile


DATASETS = {
    "mnist": DatasetSpec(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        IdxFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
        IdxFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
        IdxFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
        IdxFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
    ),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        IdxFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", None),
        IdxFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", None),
        IdxFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", None),
        IdxFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", None),
    ),
}


class ImageData(NamedTuple):
    """A dataset on the device: uint8 images `[N, 1, H, W]` and int64 labels; `test` is the evaluation split
    (the test set, or the held-out validation images when `validation_size` > 0)."""

    name: str
    train: torch.Tensor
    train_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    pixel_means: torch.Tensor  # float32 mean grey level / 255 of each training pixel, `[1, H, W]`


def data_root(config: DataConfig) -> Path:
    """Where the dataset folders are: data.root, else $RLGEN_DATA, else the user cache."""
    if config.root:
        return Path(config.root).expanduser()
    if os.environ.get("RLGEN_DATA"):
        return Path(os.environ["RLGEN_DATA"]).expanduser()
    return Path.home() / ".cache" / "rlgen" / "data"


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _content(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as error:
        raise UserError(f"{path}: not a readable gzip file ({error}); delete it so it is downloaded again") from None


def verified_content(path: Path, spec: IdxFile) -> bytes:
    """The file's IDX bytes once its digest matches the official one; a mismatch is an error."""
    raw = path.read_bytes()
    content = _content(path)
    if path.suffix == ".gz" and _md5(raw) == spec.gz_md5:
        return content
    if spec.content_md5 is not None and _md5(content) == spec.content_md5:
        return content
    if spec.content_md5 is None and path.suffix != ".gz":
        return content  # no published digest of the plain file exists; the IDX header is still checked
    raise UserError(
        f"{path}: checksum mismatch (MD5 {_md5(raw)}; expected {spec.gz_md5} for the .gz"
        f"{f' or content MD5 {spec.content_md5}' if spec.content_md5 else ''}); the file is not used: "
        f"delete it so it is downloaded again, or replace it with the official file"
    )


def parse_idx(content: bytes, magic: int, source: Path) -> np.ndarray:
    """An IDX array of unsigned bytes (images `[N, H, W]` or labels `[N]`) after checking its header."""
    if len(content) < 8:
        raise UserError(f"{source}: too short to be an IDX file")
    found = int.from_bytes(content[:4], "big")
    if found != magic:
        raise UserError(f"{source}: wrong magic number {found} (expected {magic}); not an IDX file of this kind")
    dims = magic & 0xFF
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(content[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    if len(content) != header + int(np.prod(shape)):
        raise UserError(f"{source}: {len(content) - header} data bytes for shape {shape}; the file is truncated")
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def _download(spec: IdxFile, folder: Path, mirrors: list[str]) -> Path:
    """Fetch one file from the first mirror that serves it with the right digest; atomic, nothing half-written."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / spec.name
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + spec.name
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{spec.name}.", suffix=".gz")
        try:
            with os.fdopen(handle, "wb") as file, urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, file)
            verified_content(Path(temporary), spec)
            os.replace(temporary, target)
            return target
        except (urllib.error.URLError, OSError, ValueError, UserError) as error:
            failures.append(f"{url}: {getattr(error, 'reason', error)}")
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    raise UserError(f"could not download {spec.name} ({'; '.join(failures)})")


def _find_or_fetch(spec: IdxFile, folder: Path, config: DataConfig, dataset: DatasetSpec) -> Path:
    for candidate in (folder / spec.name, folder / spec.name[:-3]):
        if candidate.is_file():
            return candidate
    where = (
        f"put {spec.name} (or it decompressed) in {folder}/, or point data.root or RLGEN_DATA at a folder "
        f"holding {dataset.folder}/"
    )
    if not config.download:
        raise UserError(f"{folder / spec.name}: missing and data.download is false; {where}")
    try:
        return _download(spec, folder, [*config.mirrors, *dataset.mirrors])
    except UserError as error:
        raise UserError(f"{error}; {where}") from None


def load_arrays(config: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train images, train labels, test images, test labels as numpy arrays, verified."""
    if config.name not in DATASETS:
        raise UserError(unknown_name_message("dataset", config.name, list(DATASETS)))
    dataset = DATASETS[config.name]
    folder = data_root(config) / dataset.folder
    arrays = []
    for spec, magic in ((dataset.train_images, IMAGES_MAGIC), (dataset.train_labels, LABELS_MAGIC),
                        (dataset.test_images, IMAGES_MAGIC), (dataset.test_labels, LABELS_MAGIC)):
        path = _find_or_fetch(spec, folder, config, dataset)
        arrays.append(parse_idx(verified_content(path, spec), magic, path))
    train, train_labels, test, test_labels = arrays
    if len(train) != len(train_labels) or len(test) != len(test_labels):
        raise UserError(f"{folder}: image and label files hold different numbers of items")
    return train, train_labels, test, test_labels


def load_images(config: DataConfig, device: torch.device) -> ImageData:
    """The dataset on `device`, split as the config says (validation held out of the training images)."""
    check_binarization(config.binarize, config.threshold)
    train, train_labels, test, test_labels = load_arrays(config)
    if config.validation_size:
        if not 0 < config.validation_size < len(train):
            raise UserError(f"data.validation_size must lie in [0, {len(train) - 1}], got {config.validation_size}")
        cut = len(train) - config.validation_size
        train, train_labels, test, test_labels = train[:cut], train_labels[:cut], train[cut:], train_labels[cut:]

    def images(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array.copy()).unsqueeze(1).to(device)

    def labels(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array.astype(np.int64)).to(device)

    train_images = images(train)
    pixel_means = train_images.to(torch.float32).mean(dim=0).div_(255.0)
    return ImageData(config.name, train_images, labels(train_labels), images(test), labels(test_labels), pixel_means)


def evaluation_images(images: torch.Tensor, config: DataConfig) -> torch.Tensor:
    """uint8 images as the model is evaluated on them, the same every time: binary data as one Bernoulli
    draw fixed by `data.fixed_seed` (or thresholded), grey levels in [0, 1] otherwise."""
    if config.binarize in ("dynamic", "fixed"):
        return fixed_binarization(images, config.fixed_seed).to(torch.float32)
    return prepare(images, config.binarize, config.threshold, torch.Generator(device=images.device))
