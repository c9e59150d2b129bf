"""Reverse AIS (RAISE, Burda, Grosse & Salakhutdinov 2015): a conservative estimate of an RBM's test
log-likelihood that needs no estimate of log Z, as a check on AIS.

AIS's forward chain (base-rate sample, one Gibbs sweep at each beta_k, see ais.py) is itself a generative model
whose last state v has a marginal p_ann(v), close to the RBM's p(v) when the temperatures are many. RAISE
estimates p_ann(v) of a test image by importance sampling with the chain run backwards from the image:

    x_K = v,   x_k ~ T_{k+1}(. | x_{k+1}) for k = K-1 ... 0,   w = p_K*(v) / Z_A * prod_k p_k*(x_k) / p_{k+1}*(x_k)

(T_k, Gibbs at beta_k, is reversible with respect to p_k). E[w] = p_ann(v) exactly, so the mean of log w is a
stochastic lower bound on log p_ann(v): where AIS's log-likelihood rests on a log Z that tends to come out low
(and the log-likelihood high), RAISE's tends to come out low.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from core.progress import progress_of
from generative.metrics.ais import (PAPER_TEMPERATURES, annealed_gibbs, annealing_schedule, base_log_partition,
                                    log_ratio)
from generative.rbm import RBM


@torch.no_grad()
def reverse_ais_log_likelihoods(rbm: RBM, base_biases: torch.Tensor, images: torch.Tensor, chains: int = 1,
                                temperatures: int = PAPER_TEMPERATURES, generator: Optional[torch.Generator] = None,
                                progress: Optional[str] = "RAISE") -> torch.Tensor:
    """The RAISE estimate of log p(v) of each image (float64, `[N]`): the log of the mean of `chains` importance
    weights per image, all images' chains annealed together as one batch on the RBM's device."""
    weights, visible_bias, hidden_bias = rbm.standard_form()
    base = base_biases.to(weights)
    betas = annealing_schedule(temperatures).tolist()
    start = images.flatten(1).to(weights).repeat_interleave(chains, dim=0)
    visible = start
    bias_difference = visible_bias - base
    log_weights = -rbm.free_energy(start).double() - base_log_partition(base, rbm.hidden)  # log p_K*(v) - log Z_A
    hidden_input = torch.addmm(hidden_bias, visible, weights)
    label = None if progress is None else f"{progress} ({images.shape[0]} images x {chains} chains)"
    with progress_of(temperatures, label, "temperatures") as shown:
        for lower, upper in zip(reversed(betas[:-1]), reversed(betas[1:])):
            visible = annealed_gibbs(hidden_input, upper, base, visible_bias, weights, generator)
            hidden_input = torch.addmm(hidden_bias, visible, weights)
            log_weights += log_ratio(visible, hidden_input, bias_difference, lower, upper)
            shown.advance()
    per_image = log_weights.view(images.shape[0], chains)
    return torch.logsumexp(per_image, dim=1) - math.log(chains)
