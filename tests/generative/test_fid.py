"""The classifier-feature Fréchet distance and mode coverage: the formula against scipy on random features, and
the expected behaviour on real MNIST digits scored by a small judge trained through the framework."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.classification import MODELS
from generative import mnist_classifier
from generative.data import DataConfig, load_images
from generative.metrics.fid import (class_fractions, feature_statistics, frechet_distance, inception_score,
                                    judge_outputs, kl_to_uniform, sample_quality, trace_sqrt_product)
from mnist_data import MNIST_ROOT, needs_mnist, quick_judge

ROOT = Path(__file__).resolve().parents[2]
@pytest.fixture(scope="session")
def judge(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    return mnist_classifier.load_judge(quick_judge(tmp_path_factory.getbasetemp()), torch.device("cpu"))


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """5,000 training and the 10,000 test digits in [0, 1]."""
    data = load_images(DataConfig(root=str(MNIST_ROOT)), torch.device("cpu"))
    return data.train[:5000].float() / 255, data.test.float() / 255


def _scipy_frechet(x: np.ndarray, y: np.ndarray) -> float:
    from scipy import linalg

    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(cov_x @ cov_y).real
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(cov_x + cov_y - 2 * root))


@pytest.mark.parametrize("dims, count", [(5, 50), (64, 2000), (128, 300)])
def test_frechet_distance_matches_scipy_on_random_features(dims: int, count: int) -> None:
    generator = torch.Generator().manual_seed(dims)
    mixing = torch.randn(dims, dims, generator=generator)
    x = torch.randn(count, dims, generator=generator) @ mixing
    y = torch.randn(count, dims, generator=generator) @ (mixing + 0.3) + 0.5
    ours = frechet_distance(feature_statistics(x), feature_statistics(y))
    assert ours == pytest.approx(_scipy_frechet(x.double().numpy(), y.double().numpy()), rel=1e-6)


def test_trace_sqrt_product_of_commuting_matrices() -> None:
    a, b = torch.diag(torch.tensor([4.0, 9.0, 0.0], dtype=torch.float64)), torch.eye(3, dtype=torch.float64) * 4
    assert float(trace_sqrt_product(a, b)) == pytest.approx(2 * 2 + 3 * 2)


def test_mode_coverage_and_inception_score_by_hand() -> None:
    uniform = torch.eye(10).repeat(3, 1)
    assert kl_to_uniform(class_fractions(uniform)) == pytest.approx(0.0, abs=1e-12)
    assert inception_score(uniform) == pytest.approx(10.0)
    one_class = torch.zeros(4, 10)
    one_class[:, 3] = 1
    assert kl_to_uniform(class_fractions(one_class)) == pytest.approx(np.log(10))
    assert inception_score(one_class) == pytest.approx(1.0)
    assert inception_score(torch.full((5, 10), 0.1)) == pytest.approx(1.0)


@needs_mnist
def test_identical_sets_score_zero_and_real_digits_score_small(judge, digits) -> None:
    train, test = digits
    test_outputs = judge_outputs(judge, test)
    reference = feature_statistics(test_outputs.features)
    assert sample_quality(test_outputs, reference)["fid"] == pytest.approx(0.0, abs=1e-6)
    real = frechet_distance(feature_statistics(judge_outputs(judge, train).features), reference)
    noisy = frechet_distance(feature_statistics(judge_outputs(judge, (train + 0.1 * torch.randn_like(train))
                                                              .clamp(0, 1)).features), reference)
    assert 0 < real < noisy / 10


@needs_mnist
def test_fid_grows_monotonically_with_noise_and_blur(judge, digits) -> None:
    train, test = digits
    reference = feature_statistics(judge_outputs(judge, test).features)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(train.shape, generator=generator)

    def fid(images: torch.Tensor) -> float:
        return frechet_distance(feature_statistics(judge_outputs(judge, images).features), reference)

    noisy = [fid((train + sigma * noise).clamp(0, 1)) for sigma in (0.0, 0.1, 0.2, 0.4, 0.8)]
    assert noisy == sorted(noisy) and noisy[-1] > 5 * noisy[1]
    blurred = [fid(F.avg_pool2d(train, size, stride=1, padding=size // 2)) if size > 1 else fid(train)
               for size in (1, 3, 5, 7)]
    assert blurred == sorted(blurred)


@needs_mnist
def test_real_test_digits_cover_the_classes_near_uniformly(judge, digits) -> None:
    outputs = judge_outputs(judge, digits[1])
    quality = sample_quality(outputs, feature_statistics(outputs.features))
    fractions = [quality[f"class_fraction_{label}"] for label in range(10)]
    assert sum(fractions) == pytest.approx(1.0)
    assert 0.08 < min(fractions) and max(fractions) < 0.125  # MNIST's test set: 8.9% fives to 11.4% ones
    assert quality["mode_kl"] < 0.01
    # The quick judge is ~97% right but not confident (dropout, 300 steps): a full one gives about 9.8.
    noise = judge_outputs(judge, torch.rand(1000, 1, 28, 28)).probabilities
    assert quality["inception_score"] > 5 > 2 > inception_score(noise)


def test_cnn_model_rejects_a_hidden_list_without_a_feature_width() -> None:
    from core.classification import ClassifierModelConfig
    from core.errors import UserError

    with pytest.raises(UserError, match="conv channels followed by the feature width"):
        MODELS.get("cnn")(ClassifierModelConfig(name="cnn", hidden=[32]), (1, 28, 28), 10)


class _TinyJudge(torch.nn.Module):
    """The `features` and `head` a judge has, without MNIST."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 8), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 10)


def test_judge_outputs_are_the_same_with_their_progress_lines(monkeypatch, caplog) -> None:
    monkeypatch.setattr("core.progress.DEFAULTS.every_s", 0.0)  # a line at every batch
    caplog.set_level(logging.INFO, logger="rlgen")
    torch.manual_seed(0)
    judge, images = _TinyJudge(), torch.rand(120, 1, 28, 28)
    quiet = judge_outputs(judge, images, batch_size=50, progress=None)
    assert caplog.records == []
    shown = judge_outputs(judge, images, batch_size=50, progress="FID: judging samples")
    assert torch.equal(quiet.features, shown.features) and torch.equal(quiet.probabilities, shown.probabilities)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("FID: judging samples: 50/120 images (41.7%)")
    assert lines[-1].startswith("FID: judging samples: 120/120 images in ")
