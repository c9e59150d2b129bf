"""Deep belief net: a stack of RBMs trained greedily, layer by layer (Hinton, Osindero & Teh 2006).

Layer l is an RBM whose visible units are the hidden units of layer l - 1, trained on their probabilities
(or samples) given the data below. As a generative model, the top RBM is an undirected prior over the
units under it and every lower layer a directed p(below | above). Samples run the top RBM's Gibbs chain and
pass its visible states down; the log-likelihood is estimated by the variational lower bound of
Salakhutdinov & Murray (2008, section 4), with the lower layers' p(h|v) as the approximate posterior.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from core.errors import UserError
from generative.rbm import RBM, RBMConfig, RBMTrainConfig, bernoulli

PROPAGATIONS = ("probabilities", "samples")


@dataclass
class DBNLayerConfig(RBMConfig):
    """One layer: its RBM (size, initialisation, centering) and the training settings it changes."""

    epochs: Optional[float] = None  # passes over the data for this layer; null: train.epochs
    lr: Optional[float] = None  # this layer's step size; null: train.lr
    method: Optional[str] = None  # cd | pcd; null: train.method
    gibbs_steps: Optional[int] = None  # k; null: train.gibbs_steps


def layer_train_config(train: RBMTrainConfig, layer: DBNLayerConfig) -> RBMTrainConfig:
    """`train` with the layer's own settings where it has them."""
    changes = {name: getattr(layer, name) for name in ("epochs", "lr", "method", "gibbs_steps")}
    return dataclasses.replace(train, **{name: value for name, value in changes.items() if value is not None})


def check_propagation(propagate: str) -> None:
    if propagate not in PROPAGATIONS:
        raise UserError(f"model.propagate: unknown {propagate!r}; valid: {', '.join(PROPAGATIONS)}")


def _bernoulli_log_probability(states: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(states) of independent units with these log-odds, summed per row."""
    return -F.binary_cross_entropy_with_logits(logits, states, reduction="none").sum(dim=1)


class DBN:
    """The trained layers, bottom first; the last one is the top RBM."""

    def __init__(self, layers: list[RBM]) -> None:
        self.layers = layers

    def up(self, visible: torch.Tensor, depth: int, sample: bool = False,
           generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """What layer `depth` sees of `visible`: p(h|below) through the first `depth` layers, or draws from it."""
        for layer in self.layers[:depth]:
            visible = layer.hidden_probabilities(visible)
            if sample:
                visible = bernoulli(visible, generator)
        return visible

    @torch.no_grad()
    def mean_input(self, images: torch.Tensor, depth: int, sample: bool = False,
                   generator: Optional[torch.Generator] = None, batch_size: int = 10000) -> torch.Tensor:
        """Mean over `images` of what layer `depth` sees: its initial visible biases and AIS base rate."""
        total = sum(self.up(images[start:start + batch_size], depth, sample, generator).sum(dim=0)
                    for start in range(0, images.shape[0], batch_size))
        return total / images.shape[0]

    @torch.no_grad()
    def sample(self, top_states: torch.Tensor, gibbs_steps: int, generator: Optional[torch.Generator] = None,
               ) -> torch.Tensor:
        """Run the top RBM's chain from `top_states` (states of its visible units), then pass the result down:
        samples through the directed layers, p(v|h) at the bottom, as images are shown (with one layer, p(v|h)
        for h drawn from the chain's next half-step)."""
        states = self.layers[-1].gibbs(top_states, gibbs_steps, generator) if gibbs_steps else top_states
        if len(self.layers) == 1:
            bottom = self.layers[0]
            return bottom.visible_probabilities(bernoulli(bottom.hidden_probabilities(states), generator))
        for depth, layer in enumerate(reversed(self.layers[:-1])):
            probabilities = layer.visible_probabilities(states)
            states = probabilities if depth == len(self.layers) - 2 else bernoulli(probabilities, generator)
        return states

    @torch.no_grad()
    def log_likelihood_bound(self, images: torch.Tensor, top_log_z: float,
                             generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """One-sample estimate of log p(v) >= E_q[sum_l log p(h_{l-1}|h_l) - log q(h_l|h_{l-1}) - F_top] - log Z_top,
        per image, h_l ~ q drawn by the lower layers' p(h|v); for one layer, exactly -F(v) - log Z."""
        states = images.flatten(1)
        bound = torch.zeros(states.shape[0], dtype=torch.float64, device=states.device)
        for layer in self.layers[:-1]:
            hidden = bernoulli(layer.hidden_probabilities(states), generator)
            bound += (_bernoulli_log_probability(states, layer.visible_logits(hidden))
                      - _bernoulli_log_probability(hidden, layer.hidden_logits(states))).double()
            states = hidden
        return bound - self.layers[-1].free_energy(states).double() - top_log_z
