"""Where the tests find MNIST: where rlgen itself looks (`RLGEN_DATA`, else ~/.cache/rlgen/data), so the
tests that need it run wherever a user's runs would find it, and skip with that place named otherwise."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from generative import mnist_classifier
from generative.data import DATASETS, DataConfig, data_root

MNIST_ROOT: Path = data_root(DataConfig())
SKIP_REASON = (f"MNIST is not in {MNIST_ROOT / 'mnist'} ($RLGEN_DATA, else ~/.cache/rlgen/data; "
               "the README's `rlgen fetch mnist` puts it there)")


def mnist_present() -> bool:
    """All four IDX files, plain or gzip-compressed, in the data root's mnist/ folder."""
    folder = MNIST_ROOT / "mnist"
    spec = DATASETS["mnist"]
    files = (spec.train_images, spec.train_labels, spec.test_images, spec.test_labels)
    return all((folder / f.name).is_file() or (folder / f.name.removesuffix(".gz")).is_file() for f in files)


needs_mnist = pytest.mark.skipif(not mnist_present(), reason=SKIP_REASON)


def skip_without_mnist() -> None:
    """Skip the calling test or fixture when MNIST is absent (for session fixtures that load it)."""
    if not mnist_present():
        pytest.skip(SKIP_REASON)


# A judge trained in about 15 s on one thread (~97% test accuracy): enough to rank image sets and score a GAN.
QUICK_JUDGE = ("train.steps=300", "train.batch_size=64", "model.hidden=[16,32,64]", "run.eval_every=1000",
               "run.log_every=100")


def quick_judge(basetemp: Path) -> Path:
    """The quick judge's file in the session's temporary folder, trained there by the first test that needs it."""
    skip_without_mnist()
    torch.set_num_threads(1)
    path = basetemp / "judge" / "mnist_cnn.pt"
    mnist_classifier.ensure_judge(path, str(MNIST_ROOT), torch.device("cpu"), 1, QUICK_JUDGE)
    return path
