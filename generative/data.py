"""MNIST and Fashion-MNIST from their IDX files, downloaded with verified checksums when missing, loaded
whole onto the training device as uint8.

The data root is `data.root` in the experiment file, else the `RLGEN_DATA` environment variable, else
`~/.cache/rlgen/data`; each dataset lives in its own folder there (`mnist/`, `fashion_mnist/`) as the
four IDX files, plain or gzip-compressed. A file counts as genuine when the SHA-256 of its decompressed
IDX bytes is the recorded one, so copies that a distribution re-compressed (other gzip level, header,
mtime or name) or decompressed pass; an untouched official .gz also passes by its published MD5, which
keeps official downloads working should a recorded content digest be wrong, and is the only check left
for a dataset with no recorded content digest (its re-compressed copies are refused as unverifiable).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shlex
import tempfile
import urllib.error
import urllib.request
import zlib
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
    """One file of a dataset: its published name, the publisher's MD5 of the .gz, and the SHA-256 of the
    decompressed IDX bytes (None where no trustworthy one is known)."""

    name: str  # as published, ending in .gz
    gz_md5: str
    content_sha256: Optional[str]


class DatasetSpec(NamedTuple):
    folder: str
    mirrors: tuple[str, ...]
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile


# Where the content digests come from. MNIST: computed from decompressed files whose MD5s are the ones
# published for decades (6bbc9ace..., a25bea73..., 2646ac64..., 27ae3e4e...). Fashion-MNIST labels:
# computed from the .gz files in zalandoresearch/fashion-mnist whose MD5s are the publisher's. Fashion-MNIST
# images: as published by several independent loaders whose label digests agree with those computed here;
# the images themselves could not be fetched here to recompute them.
DATASETS = {
    "mnist": DatasetSpec(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        IdxFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        IdxFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        IdxFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        IdxFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    ),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        IdxFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        IdxFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        IdxFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        IdxFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
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


def _genuine_content(raw: bytes, compressed: bool, spec: IdxFile) -> bytes:
    """The IDX bytes of a file's `raw` bytes when they are the official content; else ValueError saying why."""
    if compressed:
        try:
            content = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"not a readable gzip file ({error})") from None
    else:
        content = raw
    if spec.content_sha256 is not None:
        digest = hashlib.sha256(content).hexdigest()
        if digest == spec.content_sha256 or (compressed and _md5(raw) == spec.gz_md5):
            return content
        raise ValueError(f"checksum mismatch (content SHA-256 {digest}; expected {spec.content_sha256})")
    if compressed and _md5(raw) == spec.gz_md5:
        return content
    found = f"checksum mismatch (MD5 {_md5(raw)}; expected {spec.gz_md5} for the official .gz) and a " if compressed \
        else "a "
    raise ValueError(f"{found}re-compressed or decompressed copy cannot be verified: no content digest is recorded "
                     f"for {spec.name}")


def verified_content(path: Path, spec: IdxFile) -> bytes:
    """The file's IDX bytes once its content (or, for the official .gz, its own) digest matches; else an error."""
    try:
        return _genuine_content(path.read_bytes(), path.suffix == ".gz", spec)
    except ValueError as error:
        raise UserError(f"{path}: {error}; the file is not used: delete it so it is downloaded again, or replace "
                        f"it with the official file") from None


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


def _write_atomically(target: Path, raw: bytes) -> None:
    """Write `raw` to `target` whole or not at all, making the folders it needs only now; the folders made
    here are removed again if the write fails (never one that existed before)."""
    absent = []
    folder = target.parent
    while not folder.exists():
        absent.append(folder)
        folder = folder.parent
    created: list[Path] = []
    temporary = None
    try:
        for folder in reversed(absent):
            try:
                folder.mkdir()
            except FileExistsError:
                continue  # made meanwhile by someone else: not ours to remove
            created.append(folder)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(handle, "wb") as file:
            file.write(raw)
        os.replace(temporary, target)
    except OSError as error:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass  # something else put a file there meanwhile; leave it
        raise UserError(f"cannot write {target}: {error.strerror or error}") from None


def _download(spec: IdxFile, folder: Path, mirrors: list[str]) -> Path:
    """Fetch one file from the first mirror that serves it with the right digest; a folder is made and the
    file written only once a verified copy is in memory, so a failure leaves nothing behind."""
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + spec.name
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                raw = response.read()
            _genuine_content(raw, True, spec)
        except (urllib.error.URLError, OSError, ValueError) as error:
            failures.append(f"{url}: {getattr(error, 'reason', error)}")
            continue
        _write_atomically(folder / spec.name, raw)
        return folder / spec.name
    raise UserError(f"could not download {spec.name} ({'; '.join(failures)})")


def _missing_message(missing: list[IdxFile], folder: Path, config: DataConfig, dataset: DatasetSpec,
                     cause: str) -> str:
    """One message naming every missing file, where it goes, and how to get it there."""
    fetch = f"rlgen fetch {config.name}" + (f" --root {shlex.quote(str(data_root(config)))}" if config.root else "")
    several = len(missing) > 1
    return (
        f"{len(missing)} {config.name} file{'s' if several else ''} missing {cause}: "
        f"{', '.join(spec.name for spec in missing)} (gzip-compressed or plain) {'go' if several else 'goes'} in "
        f"{folder}/; get {'them' if several else 'it'} with `{fetch}` (add `--mirror URL` for another server or a "
        f"file:// folder holding the files), or download from {dataset.mirrors[0]} into that folder, or point "
        f"data.root or RLGEN_DATA at a folder holding {dataset.folder}/"
    )


def _locate(spec: IdxFile, folder: Path) -> Optional[Path]:
    for candidate in (folder / spec.name, folder / spec.name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def load_arrays(config: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train images, train labels, test images, test labels as numpy arrays, verified; missing files are
    downloaded (or named, all of them, in one error)."""
    if config.name not in DATASETS:
        raise UserError(unknown_name_message("dataset", config.name, list(DATASETS)))
    dataset = DATASETS[config.name]
    folder = data_root(config) / dataset.folder
    files = (dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels)
    paths = {spec.name: _locate(spec, folder) for spec in files}
    missing = [spec for spec in files if paths[spec.name] is None]
    if missing and not config.download:
        raise UserError(_missing_message(missing, folder, config, dataset, "and data.download is false"))
    mirrors = [*config.mirrors, *dataset.mirrors]
    for index, spec in enumerate(missing):
        try:
            paths[spec.name] = _download(spec, folder, mirrors)
        except UserError as error:
            # The other files would most likely fail the same way (no network); name them all at once.
            raise UserError(_missing_message(missing[index:], folder, config, dataset, f"and {error}")) from None
    arrays = []
    for spec, magic in zip(files, (IMAGES_MAGIC, LABELS_MAGIC, IMAGES_MAGIC, LABELS_MAGIC)):
        path = paths[spec.name]
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
