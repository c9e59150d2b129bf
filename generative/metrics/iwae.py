"""Likelihood figures of a VAE on a test set: the importance-weighted bound with many samples (Burda et al.
2016), computed in chunks so memory stays bounded whatever k is, the ELBO, and the active latent units."""
from __future__ import annotations

import math
from typing import Optional

import torch

from core.progress import progress_of
from generative.vae import VAE, gaussian_kl

# Decoder outputs held at once (chunk of samples x images x pixels): 2^24 floats, 64 MB.
OUTPUT_BUDGET = 1 << 24


@torch.no_grad()
def iwae_log_likelihood(model: VAE, images: torch.Tensor, samples: int, batch_size: int = 100,
                        budget: int = OUTPUT_BUDGET, progress: Optional[str] = "IWAE bound") -> torch.Tensor:
    """The `samples`-sample IWAE bound on log p(x) of every image (`[N]`), a running log-sum-exp over chunks
    of samples so that k = 5000 needs no more memory than k = 1. `progress` labels the display of a long one
    (core/progress.py), k appended; None shows none."""
    bounds = []
    label = None if progress is None else f"{progress} (k={samples})"
    with progress_of(images.shape[0], label, "images") as shown:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size]
            posterior = model.encode(batch)
            chunk = max(1, min(samples, budget // (batch.shape[0] * model.pixels)))
            total = torch.full((batch.shape[0],), -math.inf, device=batch.device)
            drawn = 0
            while drawn < samples:
                count = min(chunk, samples - drawn)
                log_weights = model.log_weights(batch, count, posterior).total
                total = torch.logaddexp(total, torch.logsumexp(log_weights, dim=0))
                drawn += count
            bounds.append(total - math.log(samples))
            shown.advance(batch.shape[0])
    return torch.cat(bounds)


@torch.no_grad()
def elbo_terms(model: VAE, images: torch.Tensor, batch_size: int = 100) -> dict[str, float]:
    """Mean one-sample ELBO, reconstruction term -log p(x|z) and closed-form KL over `images`, in nats."""
    reconstruction = kl = 0.0
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size]
        mean, log_var = model.encode(batch)
        weights = model.log_weights(batch, 1, (mean, log_var))
        reconstruction += float(-weights.log_likelihood.sum())
        kl += float(gaussian_kl(mean, log_var).sum())
    count = images.shape[0]
    return {"elbo": -(reconstruction + kl) / count, "reconstruction": reconstruction / count, "kl": kl / count}


@torch.no_grad()
def active_units(model: VAE, images: torch.Tensor, threshold: float = 0.01, batch_size: int = 500) -> int:
    """Latent dimensions whose posterior mean varies over the data: Cov_x(E_q[z_u|x]) > threshold (Burda et al.)."""
    means = torch.cat([model.encode(images[start:start + batch_size])[0]
                       for start in range(0, images.shape[0], batch_size)])
    return int((means.var(dim=0) > threshold).sum())

