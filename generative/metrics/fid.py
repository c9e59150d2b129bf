"""Sample quality judged by an MNIST classifier: the Fréchet distance between feature statistics of generated
and real images, mode coverage (the fraction of samples per class and its KL to uniform) and an
inception-style score from the classifier's softmax.

Inception weights cannot be downloaded here and judge digits poorly anyway (Heusel et al. 2017 define the
distance for any feature map), so the features are the penultimate layer of a CNN the framework trains on
MNIST (`generative/mnist_classifier.py`). The matrix square root comes from two symmetric eigen-decompositions
in float64, checked against `scipy.linalg.sqrtm` in the tests.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

from core.progress import progress_of


class FeatureStatistics(NamedTuple):
    """Mean and covariance of a set of feature vectors, in float64."""

    mean: torch.Tensor  # [D]
    covariance: torch.Tensor  # [D, D], unbiased (divided by N - 1)
    count: int


class JudgeOutputs(NamedTuple):
    """What the classifier says about a set of images."""

    features: torch.Tensor  # [N, D] penultimate-layer activations
    probabilities: torch.Tensor  # [N, K] softmax over the classes


def feature_statistics(features: torch.Tensor) -> FeatureStatistics:
    """Mean and unbiased covariance of `[N, D]` features (N >= 2)."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"feature_statistics needs [N >= 2, D] features, got shape {tuple(features.shape)}")
    values = features.to(torch.float64)
    mean = values.mean(dim=0)
    centered = values - mean
    return FeatureStatistics(mean, centered.T @ centered / (values.shape[0] - 1), values.shape[0])


def _symmetric_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The PSD square root of a symmetric PSD matrix; round-off negative eigenvalues count as 0."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def trace_sqrt_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """tr((A B)^(1/2)) for symmetric PSD A, B. A B is similar to A^(1/2) B A^(1/2), which is symmetric PSD,
    so the trace is the sum of the square roots of that matrix's eigenvalues and no general sqrtm is needed."""
    root = _symmetric_sqrt(a)
    inner = root @ b @ root
    return torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()


def frechet_distance(p: FeatureStatistics, q: FeatureStatistics) -> float:
    """||mu_p - mu_q||^2 + tr(S_p + S_q - 2 (S_p S_q)^(1/2)): the squared 2-Wasserstein distance between the
    Gaussians with these moments."""
    difference = p.mean - q.mean
    trace = torch.trace(p.covariance) + torch.trace(q.covariance) - 2 * trace_sqrt_product(p.covariance, q.covariance)
    return float(difference @ difference + trace)


@torch.no_grad()
def judge_outputs(judge: nn.Module, images: torch.Tensor, batch_size: int = 500,
                  progress: Optional[str] = "judging images") -> JudgeOutputs:
    """Features and class probabilities of `[N, 1, 28, 28]` images in [0, 1]; `judge` has `features` and `head`
    (`generative.mnist_classifier.DigitCNN`). Evaluated in eval mode, chunk by chunk. `progress` labels the
    display of a long run (core/progress.py); None shows none."""
    was_training = judge.training
    judge.eval()
    features, probabilities = [], []
    with progress_of(images.shape[0], progress, "images") as shown:
        for start in range(0, images.shape[0], batch_size):
            hidden = judge.features(images[start:start + batch_size])
            features.append(hidden)
            probabilities.append(torch.softmax(judge.head(hidden), dim=1))
            shown.advance(hidden.shape[0])
    judge.train(was_training)
    return JudgeOutputs(torch.cat(features), torch.cat(probabilities))


def class_fractions(probabilities: torch.Tensor) -> torch.Tensor:
    """The fraction of images the judge assigns to each class (its argmax), float64 `[K]`."""
    counts = torch.bincount(probabilities.argmax(dim=1), minlength=probabilities.shape[1])
    return counts.to(torch.float64) / probabilities.shape[0]


def kl_to_uniform(fractions: torch.Tensor) -> float:
    """KL(fractions || uniform) in nats: 0 when every class is equally common, log K when one class is all."""
    present = fractions[fractions > 0]
    return float((present * torch.log(present * fractions.numel())).sum())


def inception_score(probabilities: torch.Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) over all images at once (Salimans et al. 2016): near K for confident,
    evenly spread classes, near 1 for unrecognisable or single-class samples."""
    conditional = probabilities.to(torch.float64).clamp(min=1e-12)
    marginal = conditional.mean(dim=0, keepdim=True)
    return float(torch.exp((conditional * (conditional.log() - marginal.log())).sum(dim=1).mean()))


def sample_quality(outputs: JudgeOutputs, reference: FeatureStatistics) -> dict[str, float]:
    """FID against `reference`, mode coverage and inception score of a set of images, keyed by short names:
    `fid`, `mode_kl`, `inception_score`, `min_class_fraction`, `max_class_fraction`, `class_fraction_<k>`."""
    fractions = class_fractions(outputs.probabilities)
    metrics = {
        "fid": frechet_distance(feature_statistics(outputs.features), reference),
        "mode_kl": kl_to_uniform(fractions),
        "inception_score": inception_score(outputs.probabilities),
        "min_class_fraction": float(fractions.min()),
        "max_class_fraction": float(fractions.max()),
    }
    metrics.update({f"class_fraction_{label}": float(value) for label, value in enumerate(fractions)})
    return metrics
