"""MNIST-style data: IDX parsing, checksums, clear errors, downloads over file:// and a loopback HTTP server,
the split, and the real MNIST files where they are present."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import UserError
from generative import data
from generative.data import DataConfig, DatasetSpec, IdxFile, evaluation_images, load_images
from mnist_data import MNIST_ROOT, needs_mnist

TINY_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
              "t10k-labels-idx1-ubyte.gz")


def _idx(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(size.to_bytes(4, "big") for size in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def tiny_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, bytes]]:
    """A 'tiny' dataset of 12 train and 4 test 28x28 images, published as .gz files in `server/`."""
    rng = np.random.default_rng(0)
    contents = {
        "train-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (12, 28, 28)), 2051),
        "train-labels-idx1-ubyte.gz": _idx(rng.integers(0, 10, 12), 2049),
        "t10k-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (4, 28, 28)), 2051),
        "t10k-labels-idx1-ubyte.gz": _idx(rng.integers(0, 10, 4), 2049),
    }
    server = tmp_path / "server"
    server.mkdir()
    files = []
    for name, content in contents.items():
        packed = gzip.compress(content, mtime=0)
        (server / name).write_bytes(packed)
        files.append(IdxFile(name, hashlib.md5(packed).hexdigest(), hashlib.sha256(content).hexdigest()))
    spec = DatasetSpec("tiny", (server.as_uri() + "/",), *files)
    monkeypatch.setitem(data.DATASETS, "tiny", spec)
    return server, contents


def _config(root: Path, **overrides) -> DataConfig:
    return DataConfig(name="tiny", root=str(root), binarize="none", **overrides)


def test_missing_files_are_downloaded_from_a_file_url_and_verified(tmp_path: Path, tiny_dataset) -> None:
    server, contents = tiny_dataset
    loaded = load_images(_config(tmp_path / "root"), torch.device("cpu"))
    assert loaded.train.shape == (12, 1, 28, 28) and loaded.train.dtype == torch.uint8
    expected = np.frombuffer(contents["train-images-idx3-ubyte.gz"][16:], dtype=np.uint8).reshape(12, 1, 28, 28)
    assert torch.equal(loaded.train, torch.from_numpy(expected.copy()))
    assert sorted(p.name for p in (tmp_path / "root" / "tiny").iterdir()) == sorted(contents)


def test_download_from_a_loopback_http_server(tmp_path: Path, tiny_dataset, monkeypatch) -> None:
    server_folder, _ = tiny_dataset
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(server_folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        spec = data.DATASETS["tiny"]._replace(mirrors=(f"http://127.0.0.1:{server.server_port}/",))
        monkeypatch.setitem(data.DATASETS, "tiny", spec)
        loaded = load_images(_config(tmp_path / "root"), torch.device("cpu"))
    finally:
        server.shutdown()
    assert loaded.test.shape == (4, 1, 28, 28)


def test_a_mirror_serving_a_corrupted_file_is_refused_and_leaves_nothing(tmp_path: Path, tiny_dataset) -> None:
    server, _ = tiny_dataset
    bad = tmp_path / "bad_mirror"
    bad.mkdir()
    for path in server.iterdir():
        bad.joinpath(path.name).write_bytes(gzip.compress(b"not the data"))
    with pytest.raises(UserError, match="could not download train-images-idx3-ubyte.gz.*checksum mismatch"):
        data._download(data.DATASETS["tiny"].train_images, tmp_path / "root", [bad.as_uri()])
    assert not (tmp_path / "root").exists()
    # With a good mirror after the bad one, the good copy is used.
    loaded = load_images(_config(tmp_path / "root", mirrors=[bad.as_uri()]), torch.device("cpu"))
    assert loaded.train.shape[0] == 12


def test_no_network_message_names_every_missing_file_the_folder_and_how_to_get_them(
        tmp_path: Path, tiny_dataset, monkeypatch) -> None:
    spec = data.DATASETS["tiny"]._replace(mirrors=("http://127.0.0.1:9/",))
    monkeypatch.setitem(data.DATASETS, "tiny", spec)
    root = tmp_path / "root"
    for download, cause in ((True, "could not download train-images-idx3-ubyte.gz .*Connection refused"),
                            (False, "data.download is false")):
        with pytest.raises(UserError) as caught:
            load_images(_config(root, download=download), torch.device("cpu"))
        message = str(caught.value)
        assert "\n" not in message and re.search(f"4 tiny files missing and {cause}", message)
        assert all(name in message for name in TINY_FILES)
        assert f"go in {root / 'tiny'}/" in message
        assert f"`rlgen fetch tiny --root {root}`" in message and "http://127.0.0.1:9/" in message
    # Files already there are not named again.
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / TINY_FILES[0]).write_bytes(tiny_dataset[0].joinpath(TINY_FILES[0]).read_bytes())
    with pytest.raises(UserError, match="3 tiny files missing") as caught:
        load_images(_config(root, download=False), torch.device("cpu"))
    assert TINY_FILES[0] not in str(caught.value)


def test_a_failed_fetch_leaves_no_folder_and_keeps_what_was_there(tmp_path: Path, tiny_dataset, monkeypatch) -> None:
    offline = data.DATASETS["tiny"]._replace(mirrors=("http://127.0.0.1:9/",))
    monkeypatch.setitem(data.DATASETS, "tiny", offline)
    for download in (True, False):
        with pytest.raises(UserError, match="missing"):
            load_images(_config(tmp_path / "nope", download=download), torch.device("cpu"))
        assert not (tmp_path / "nope").exists()
    # A root that exists stays as it was, its other contents untouched.
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="missing"):
        load_images(_config(kept), torch.device("cpu"))
    assert [path.name for path in kept.iterdir()] == ["notes.txt"]
    # A write that fails after its folders were made takes those folders away again.
    monkeypatch.setitem(data.DATASETS, "tiny", offline._replace(mirrors=(tiny_dataset[0].as_uri(),)))

    def full_disk(*args) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data.os, "replace", full_disk)
    with pytest.raises(UserError, match=r"cannot write .*nope/tiny/train-images-idx3-ubyte.gz: No space left"):
        load_images(_config(tmp_path / "nope"), torch.device("cpu"))
    assert not (tmp_path / "nope").exists()
    with pytest.raises(UserError, match="cannot write"):
        load_images(_config(kept), torch.device("cpu"))
    assert [path.name for path in kept.iterdir()] == ["notes.txt"]


def test_checksum_mismatch_wrong_magic_and_truncation(tmp_path: Path, tiny_dataset) -> None:
    server, contents = tiny_dataset
    root = tmp_path / "root" / "tiny"
    root.mkdir(parents=True)
    for name in contents:
        root.joinpath(name).write_bytes(server.joinpath(name).read_bytes())
    name = "train-images-idx3-ubyte.gz"
    root.joinpath(name).write_bytes(gzip.compress(contents[name][:-1] + b"\x07"))
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte.gz: checksum mismatch .* not used"):
        load_images(_config(tmp_path / "root"), torch.device("cpu"))
    with pytest.raises(UserError, match="wrong magic number 2049"):
        data.parse_idx(contents["train-labels-idx1-ubyte.gz"], data.IMAGES_MAGIC, Path("labels"))
    with pytest.raises(UserError, match="truncated"):
        data.parse_idx(contents[name][:-10], data.IMAGES_MAGIC, Path("images"))


def test_plain_idx_files_and_a_recompressed_copy_pass_by_content_digest(tmp_path: Path, tiny_dataset) -> None:
    _, contents = tiny_dataset
    root = tmp_path / "root" / "tiny"
    root.mkdir(parents=True)
    for index, (name, content) in enumerate(contents.items()):
        if index % 2:
            root.joinpath(name[:-3]).write_bytes(content)
        else:
            root.joinpath(name).write_bytes(gzip.compress(content, compresslevel=1))
    assert load_images(_config(tmp_path / "root"), torch.device("cpu")).train_labels.shape == (12,)


def test_without_a_content_digest_only_the_official_gz_passes(tmp_path: Path, tiny_dataset, monkeypatch) -> None:
    server, contents = tiny_dataset
    spec = data.DATASETS["tiny"]
    monkeypatch.setitem(data.DATASETS, "tiny", spec._replace(
        **{part: getattr(spec, part)._replace(content_sha256=None)
           for part in ("train_images", "train_labels", "test_images", "test_labels")}))
    labels = data.DATASETS["tiny"].train_labels
    official = server / labels.name
    assert data.verified_content(official, labels) == contents[labels.name]
    recompressed = tmp_path / labels.name
    recompressed.write_bytes(gzip.compress(contents[labels.name], compresslevel=1, mtime=7))
    with pytest.raises(UserError, match=r"checksum mismatch .* re-compressed or decompressed copy cannot be "
                                        r"verified: no content digest is recorded for train-labels"):
        data.verified_content(recompressed, labels)
    plain = tmp_path / labels.name.removesuffix(".gz")
    plain.write_bytes(contents[labels.name])
    with pytest.raises(UserError, match="decompressed copy cannot be verified"):
        data.verified_content(plain, labels)


def test_every_published_file_has_a_content_digest() -> None:
    for name, dataset in data.DATASETS.items():
        for spec in (dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels):
            assert re.fullmatch("[0-9a-f]{64}", spec.content_sha256 or ""), (name, spec.name)
            assert re.fullmatch("[0-9a-f]{32}", spec.gz_md5), (name, spec.name)


def _real_mnist_content(name: str) -> bytes:
    packed = MNIST_ROOT / "mnist" / name
    if packed.is_file():
        return gzip.decompress(packed.read_bytes())
    return (MNIST_ROOT / "mnist" / name.removesuffix(".gz")).read_bytes()


@needs_mnist
def test_real_mnist_recompressed_and_plain_copies_pass_and_altered_content_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    dataset = data.DATASETS["mnist"]
    train_images, train_labels, test_images, test_labels = (
        dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels)
    for spec in (train_images, train_labels, test_images, test_labels):  # the recorded digests are the real ones
        assert hashlib.sha256(_real_mnist_content(spec.name)).hexdigest() == spec.content_sha256
    folder.joinpath(train_images.name.removesuffix(".gz")).write_bytes(_real_mnist_content(train_images.name))
    with open(folder / train_labels.name, "wb") as raw, gzip.GzipFile(
            "labels-renamed-by-a-distribution", "wb", compresslevel=9, fileobj=raw, mtime=1234567890) as file:
        file.write(_real_mnist_content(train_labels.name))
    folder.joinpath(test_images.name).write_bytes(  # as `gzip -9 -n` writes it
        gzip.compress(_real_mnist_content(test_images.name), compresslevel=9, mtime=0))
    folder.joinpath(test_labels.name.removesuffix(".gz")).write_bytes(_real_mnist_content(test_labels.name))
    train, labels, test, _ = data.load_arrays(DataConfig(root=str(tmp_path), download=False))
    assert train.shape == (60000, 28, 28) and test.shape == (10000, 28, 28) and labels[:3].tolist() == [5, 0, 4]

    altered = bytearray(_real_mnist_content(test_labels.name))
    altered[-1] = (altered[-1] + 1) % 10
    folder.joinpath(test_labels.name.removesuffix(".gz")).write_bytes(altered)
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte: checksum mismatch \(content SHA-256"):
        data.load_arrays(DataConfig(root=str(tmp_path), download=False))
    folder.joinpath(test_labels.name.removesuffix(".gz")).unlink()
    folder.joinpath(test_labels.name).write_bytes(gzip.compress(bytes(altered), compresslevel=9, mtime=0))
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte.gz: checksum mismatch .* not used"):
        data.load_arrays(DataConfig(root=str(tmp_path), download=False))


def test_validation_split_and_unknown_dataset(tmp_path: Path, tiny_dataset) -> None:
    loaded = load_images(_config(tmp_path / "root", validation_size=3), torch.device("cpu"))
    assert loaded.train.shape[0] == 9 and loaded.test.shape[0] == 3
    with pytest.raises(UserError, match="validation_size must lie in"):
        load_images(_config(tmp_path / "root", validation_size=12), torch.device("cpu"))
    with pytest.raises(UserError, match=r"unknown dataset 'mnsit' \(did you mean 'mnist'"):
        load_images(DataConfig(name="mnsit"), torch.device("cpu"))


@needs_mnist
def test_real_mnist_loads_with_the_standard_split_and_a_fixed_evaluation_draw() -> None:
    config = DataConfig(root=str(MNIST_ROOT), download=False)
    mnist = load_images(config, torch.device("cpu"))
    assert mnist.train.shape == (60000, 1, 28, 28) and mnist.test.shape == (10000, 1, 28, 28)
    assert mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9] and mnist.test_labels[:3].tolist() == [7, 2, 1]
    assert torch.bincount(mnist.test_labels).tolist()[1] == 1135
    first, second = evaluation_images(mnist.test, config), evaluation_images(mnist.test, config)
    assert torch.equal(first, second) and set(first.unique().tolist()) == {0.0, 1.0}
    assert first.mean().item() == pytest.approx(mnist.test.float().mean().item() / 255, abs=0.002)


@needs_mnist
def test_rlgen_fetch_puts_verified_files_where_runs_and_tests_look(tmp_path: Path, monkeypatch, capsys) -> None:
    from core.cli import main

    monkeypatch.setenv("RLGEN_DATA", str(tmp_path))
    assert main(["fetch", "mnist", "--mirror", f"file://{MNIST_ROOT / 'mnist'}/"]) == 0
    assert f"60000 training and 10000 test images in {tmp_path / 'mnist'}" in capsys.readouterr().out
    assert sorted(path.name for path in (tmp_path / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz"]
    assert main(["fetch", "mnsit"]) == 2
