"""Log-likelihood of an RBM: log Z by annealed importance sampling (Salakhutdinov & Murray 2008) or, for a
small layer, exactly by enumeration; and the cheap proxies (reconstruction error, pseudo-likelihood).

AIS anneals from a base-rate model A (no weights, visible biases from the training pixel means, so
Z_A is known in closed form) to the RBM B through the distributions

    p_k*(v) = exp((1 - beta_k) b_A^T v + beta_k b_B^T v) prod_j (1 + exp(beta_k (c_j + v^T W_j)))

with one Gibbs transition leaving p_k invariant per temperature. The mean of the importance weights is
an unbiased estimate of Z_B / Z_A, so exp(log Z estimate) is unbiased, and log Z itself is biased low.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from core.progress import progress_of
from generative.rbm import RBM, bernoulli, logit, reconstruction_error

# Salakhutdinov & Murray's schedule: beta steps of 1e-3 up to 0.5, 1e-4 up to 0.9, 1e-5 up to 1.0.
SCHEDULE_SEGMENTS = ((0.5, 500), (0.9, 4000), (1.0, 10000))
PAPER_TEMPERATURES = sum(count for _, count in SCHEDULE_SEGMENTS)  # 14,500 intervals
# Largest number of states of the enumerated layer handled at once (2^16 x units floats).
ENUMERATION_CHUNK = 1 << 16


class LogPartition(NamedTuple):
    """An estimate of log Z with the interval log(Z_hat -+ 3 std(Z_hat)), as the paper reports it."""

    log_z: float
    low: float  # -inf when 3 standard errors exceed the estimate itself
    high: float
    runs: int
    temperatures: int
    # How far the runs agree: the standard deviation of the log importance weights, and the effective number of
    # runs (sum w)^2 / sum w^2 (Kish). A few runs holding most of the weight mean log Z is likely underestimated.
    log_weight_std: float = 0.0
    effective_runs: float = 1.0


def annealing_schedule(temperatures: int = PAPER_TEMPERATURES, device: Optional[torch.device] = None) -> torch.Tensor:
    """Inverse temperatures 0 = beta_0 < ... < beta_K = 1 following the paper's three segments; fewer
    `temperatures` than the paper's 14,500 spread them over the same segments in the same proportions."""
    if temperatures < len(SCHEDULE_SEGMENTS):
        raise ValueError(f"AIS needs at least {len(SCHEDULE_SEGMENTS)} temperatures, got {temperatures}")
    pieces, start, placed = [], 0.0, 0
    for index, (end, count) in enumerate(SCHEDULE_SEGMENTS):
        steps = temperatures - placed if index == len(SCHEDULE_SEGMENTS) - 1 else \
            max(1, round(temperatures * count / PAPER_TEMPERATURES))
        pieces.append(torch.linspace(start, end, steps + 1, dtype=torch.float64)[1:])
        start, placed = end, placed + steps
    return torch.cat([torch.zeros(1, dtype=torch.float64), *pieces]).to(device)


def base_rate_biases(pixel_means: torch.Tensor, clip: float = 1e-3) -> torch.Tensor:
    """Visible biases of the base-rate model: log(p / (1 - p)) of the training pixel means, clipped."""
    return logit(pixel_means.flatten().to(torch.float32), clip)


def log_ratio(visible: torch.Tensor, hidden_input: torch.Tensor, bias_difference: torch.Tensor, beta: float,
              other: float) -> torch.Tensor:
    """log p_beta*(v) - log p_other*(v) per row (float64), from the hidden input c + v^T W of the RBM B: the
    difference of like terms, since the ~14,500 small increments would drown in the rounding of two float32 sums."""
    wide_input = hidden_input.double()
    return ((beta - other) * (visible @ bias_difference).double()
            + (F.softplus(beta * wide_input) - F.softplus(other * wide_input)).sum(dim=1))


def annealed_gibbs(hidden_input: torch.Tensor, beta: float, base: torch.Tensor, visible_bias: torch.Tensor,
                   weights: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One Gibbs sweep leaving p_beta invariant, from visibles whose hidden input is given: hiddens see the
    weights scaled by beta, visibles the mixture of the two models' biases. The new visible states."""
    hidden = bernoulli(torch.sigmoid(beta * hidden_input), generator)
    visible_input = (1.0 - beta) * base + beta * torch.addmm(visible_bias, hidden, weights.T)
    return bernoulli(torch.sigmoid(visible_input), generator)


def base_log_partition(base_biases: torch.Tensor, hidden: int) -> float:
    """log Z_A: the base rate's visibles times 2^hidden from the hiddens, which see no weights at beta = 0."""
    return F.softplus(base_biases.double()).sum().item() + hidden * math.log(2.0)


@torch.no_grad()
def ais_log_partition(rbm: RBM, base_biases: torch.Tensor, runs: int = 100,
                      temperatures: int = PAPER_TEMPERATURES,
                      generator: Optional[torch.Generator] = None, progress: Optional[str] = "AIS") -> LogPartition:
    """AIS estimate of log Z of `rbm`, all `runs` chains annealed together as one batch on its device.
    `progress` labels the display of a long one (core/progress.py), the runs appended; None shows none."""
    weights, visible_bias, hidden_bias = rbm.standard_form()
    base = base_biases.to(weights)
    betas = annealing_schedule(temperatures).tolist()
    visible = bernoulli(torch.sigmoid(base).expand(runs, -1), generator)
    log_weights = torch.zeros(runs, dtype=torch.float64, device=weights.device)
    bias_difference = visible_bias - base
    label = None if progress is None else f"{progress} ({runs} runs)"
    with progress_of(temperatures, label, "temperatures") as shown:
        for previous, beta in zip(betas[:-1], betas[1:]):
            hidden_input = torch.addmm(hidden_bias, visible, weights)
            log_weights += log_ratio(visible, hidden_input, bias_difference, beta, previous)
            if beta < 1.0:
                visible = annealed_gibbs(hidden_input, beta, base, visible_bias, weights, generator)
            shown.advance()
    return _estimate(log_weights, base_log_partition(base, rbm.hidden), temperatures)


def _estimate(log_weights: torch.Tensor, log_z_base: float, temperatures: int) -> LogPartition:
    """log Z_A + log mean(w), and log(mean -+ 3 standard errors of the mean), all in log space."""
    runs = log_weights.numel()
    shift = log_weights.max()
    scaled = (log_weights - shift).exp()
    mean = scaled.mean()
    spread = 3.0 * scaled.std(unbiased=True) / math.sqrt(runs) if runs > 1 else torch.zeros_like(mean)
    offset = log_z_base + shift.item()
    low = (mean - spread).item()
    log_weight_std = log_weights.std(unbiased=True).item() if runs > 1 else 0.0
    effective_runs = (scaled.sum().square() / scaled.square().sum()).item()
    return LogPartition(offset + math.log(mean.item()), offset + math.log(low) if low > 0 else -math.inf,
                        offset + math.log((mean + spread).item()), runs, temperatures, log_weight_std, effective_runs)


def _states(start: int, stop: int, units: int, device: torch.device) -> torch.Tensor:
    """The binary configurations start..stop-1 of `units` units (bit i of the index is unit i), float64."""
    indices = torch.arange(start, stop, device=device).unsqueeze(1)
    return ((indices >> torch.arange(units, device=device)) & 1).double()


def exact_log_partition(rbm: RBM, max_units: int = 20) -> torch.Tensor:
    """log Z exactly (float64 scalar tensor), summing over every state of the smaller layer in chunks:
    over h, Z = sum_h exp(c^T h) prod_i (1 + exp(b_i + W_i h)); over v, Z = sum_v exp(-F(v)).
    Differentiable, so tests can take the exact gradient by autograd."""
    weights, visible_bias, hidden_bias = (tensor.double() for tensor in rbm.standard_form())
    over_hidden = rbm.hidden <= rbm.visible
    units = min(rbm.hidden, rbm.visible)
    if units > max_units:
        raise ValueError(f"exact log Z enumerates 2^{units} states; only layers of <= {max_units} units are allowed")
    total = torch.tensor(-math.inf, dtype=torch.float64, device=weights.device)
    for start in range(0, 2**units, ENUMERATION_CHUNK):
        states = _states(start, min(2**units, start + ENUMERATION_CHUNK), units, weights.device)
        if over_hidden:
            terms = states @ hidden_bias + F.softplus(torch.addmm(visible_bias, states, weights.T)).sum(dim=1)
        else:
            terms = states @ visible_bias + F.softplus(torch.addmm(hidden_bias, states, weights)).sum(dim=1)
        total = torch.logaddexp(total, torch.logsumexp(terms, dim=0))
    return total


def mean_log_likelihood(rbm: RBM, images: torch.Tensor, log_z: float, batch_size: int = 10000) -> float:
    """Mean over images of log p(v) = -F(v) - log Z, in nats."""
    flat = images.flatten(1).to(rbm.weights.dtype)
    with torch.no_grad():
        total = sum(rbm.free_energy(flat[start:start + batch_size]).double().sum()
                    for start in range(0, flat.shape[0], batch_size))
    return -float(total) / flat.shape[0] - log_z


@torch.no_grad()
def pseudo_log_likelihood(rbm: RBM, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> float:
    """Mean of scikit-learn's BernoulliRBM.score_samples: D log sigmoid(F(v~) - F(v)), v~ being v with one
    uniformly chosen bit flipped, a stochastic stand-in for the sum of D one-bit conditionals."""
    flat = images.flatten(1).to(rbm.weights.dtype)
    flipped = flat.clone()
    bits = torch.randint(flat.shape[1], (flat.shape[0],), generator=generator, device=flat.device)
    rows = torch.arange(flat.shape[0], device=flat.device)
    flipped[rows, bits] = 1.0 - flipped[rows, bits]
    scores = flat.shape[1] * F.logsigmoid(rbm.free_energy(flipped) - rbm.free_energy(flat))
    return float(scores.double().mean())


@torch.no_grad()
def mean_reconstruction_error(rbm: RBM, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> float:
    """Mean summed squared error between images and p(v|h), h ~ p(h|v) (see rbm.reconstruction_error)."""
    flat = images.flatten(1).to(rbm.weights.dtype)
    return float(reconstruction_error(rbm, flat, rbm.hidden_probabilities(flat), generator))
