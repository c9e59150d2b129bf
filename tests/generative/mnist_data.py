"""Where the tests find MNIST: where rlgen itself looks (`RLGEN_DATA`, else ~/.cache/rlgen/data), so the
tests that need it run wherever a user's runs would find it, and skip with that place named otherwise."""
from __future__ import annotations

from pathlib import Path

import pytest

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
