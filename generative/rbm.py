"""Bernoulli-Bernoulli restricted Boltzmann machine as plain tensors, trained by CD-k or persistent CD.

Energy, in the centered form of Montavon & Müller (2012), with offsets mu (visible) and lambda (hidden):

    E(v, h) = -(v - mu)^T W (h - lambda) - b^T (v - mu) - c^T (h - lambda)

With mu = lambda = 0 this is the ordinary RBM. Any centered RBM is an ordinary one with the same W and
biases b - W lambda, c - W^T mu (`standard_form`), so the free energy, log Z and the log-likelihood are
always those of that standard form. The gradient of the mean log-likelihood is written from the energy:
the expectation of -dE/dtheta under the data (positive phase) minus that under the model (negative phase),
the model's expectation estimated from Gibbs chains; no autograd.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import torch

from core import distributed
from core.errors import UserError
from core.sampling import PersistentChains

METHODS = ("cd", "pcd")
LR_SCHEDULES = ("constant", "linear")


@dataclass
class RBMConfig:
    """The RBM's size, initialisation and parameterisation."""

    hidden: int = 500  # hidden units (Salakhutdinov & Murray 2008: 500 on MNIST)
    init_std: float = 0.01  # standard deviation of the initial weights (Hinton's practical guide: 0.01)
    mean_clip: float = 1e-3  # data means clipped to [clip, 1 - clip] before the initial log(p / (1 - p))
    centered: bool = False  # Montavon & Müller's centered energy, offsets tracking the data means
    centering_rate: float = 0.01  # sliding-average rate of the offsets (Melchior et al. 2016: 0.01)
    # An rbm or dbn run folder (its newest good checkpoint) or checkpoint file: the RBM starts from that run's
    # layer at the same depth instead of random weights (a DBN layer with `epochs: 0` keeps it as trained).
    init_from: Optional[str] = None


@dataclass
class RBMTrainConfig:
    """How an RBM learns; defaults are Hinton & Salakhutdinov's rbm.m (CD-1, the practical guide's momentum)."""

    epochs: float = 50.0  # passes over the training images (rbm.m: 50)
    batch_size: int = 100  # images per update
    method: str = "cd"  # cd: chains restart at the data (CD-k) | pcd: persistent chains (Tieleman 2008)
    gibbs_steps: int = 1  # k: block Gibbs sweeps per update
    chains: int = 0  # persistent chains of pcd; 0 = batch_size
    lr: float = 0.1  # step size on the mean gradient (rbm.m: 0.1)
    lr_schedule: str = "constant"  # constant | linear (decays to 0 at the end of training, as Tieleman 2008)
    momentum: float = 0.9  # momentum after the first momentum_epochs (practical guide: 0.9)
    initial_momentum: float = 0.5  # momentum during the first momentum_epochs (practical guide: 0.5)
    momentum_epochs: float = 5.0  # epochs at initial_momentum
    weight_decay: float = 2e-4  # L2 penalty on the weights, not the biases (rbm.m: 0.0002)


def check_train_config(config: RBMTrainConfig, key: str = "train", untrained: bool = False) -> None:
    """One clear UserError for a setting no RBM can train with; `untrained` allows 0 epochs (a loaded layer)."""
    if config.method not in METHODS:
        raise UserError(f"{key}.method: unknown {config.method!r}; valid: {', '.join(METHODS)}")
    if config.lr_schedule not in LR_SCHEDULES:
        raise UserError(f"{key}.lr_schedule: unknown {config.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
    if config.gibbs_steps < 1 or config.chains < 0 or config.lr <= 0 or config.epochs < 0:
        raise UserError(f"{key}: gibbs_steps must be >= 1, chains >= 0, epochs and lr > 0")
    if config.epochs == 0 and not untrained:
        raise UserError(f"{key}.epochs: must be > 0 (0 is for a DBN layer that starts from a trained RBM, init_from)")
    if not (0 <= config.momentum < 1 and 0 <= config.initial_momentum < 1) or config.weight_decay < 0:
        raise UserError(f"{key}: momentum and initial_momentum must lie in [0, 1), weight_decay >= 0")


def logit(probabilities: torch.Tensor, clip: float) -> torch.Tensor:
    """log(p / (1 - p)) of probabilities clipped to [clip, 1 - clip], so all-off pixels get a finite bias."""
    clipped = probabilities.clamp(clip, 1.0 - clip)
    return torch.log(clipped) - torch.log1p(-clipped)


def bernoulli(probabilities: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """A 0/1 draw of each unit with the given probability of being on."""
    uniform = torch.rand(probabilities.shape, generator=generator, device=probabilities.device)
    return (uniform < probabilities).to(probabilities.dtype)


class RBM:
    """Weights `[visible, hidden]`, biases and centering offsets; conditionals, free energy, Gibbs sampling."""

    def __init__(self, weights: torch.Tensor, visible_bias: torch.Tensor, hidden_bias: torch.Tensor,
                 visible_offset: Optional[torch.Tensor] = None, hidden_offset: Optional[torch.Tensor] = None) -> None:
        self.weights = weights
        self.visible_bias = visible_bias
        self.hidden_bias = hidden_bias
        self.visible_offset = torch.zeros_like(visible_bias) if visible_offset is None else visible_offset
        self.hidden_offset = torch.zeros_like(hidden_bias) if hidden_offset is None else hidden_offset

    @classmethod
    def initialise(cls, visible_means: torch.Tensor, config: RBMConfig,
                   generator: Optional[torch.Generator] = None) -> "RBM":
        """Hinton's practical guide: W ~ N(0, std^2), visible biases log(p / (1 - p)) of the data means, hidden
        biases 0; centered, the offsets start at the data means and 0.5 (Melchior et al. 2016)."""
        means = visible_means.flatten().to(torch.float32)
        weights = torch.randn(means.numel(), config.hidden, generator=generator, device=means.device)
        weights.mul_(config.init_std)
        hidden_bias = torch.zeros(config.hidden, device=means.device)
        if not config.centered:
            return cls(weights, logit(means, config.mean_clip), hidden_bias)
        return cls(weights, logit(means, config.mean_clip), hidden_bias,
                   means.clamp(config.mean_clip, 1.0 - config.mean_clip), torch.full_like(hidden_bias, 0.5))

    @property
    def visible(self) -> int:
        return self.weights.shape[0]

    @property
    def hidden(self) -> int:
        return self.weights.shape[1]

    def standard_form(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W, visible bias, hidden bias) of the ordinary RBM defining the same distribution."""
        return (self.weights, self.visible_bias - self.weights @ self.hidden_offset,
                self.hidden_bias - self.visible_offset @ self.weights)

    def hidden_logits(self, visible: torch.Tensor) -> torch.Tensor:
        """c + (v - mu)^T W: the log-odds of each hidden unit given v, `[N, hidden]`."""
        return torch.addmm(self.hidden_bias, visible - self.visible_offset, self.weights)

    def visible_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """b + W (h - lambda): the log-odds of each visible unit given h, `[N, visible]`."""
        return torch.addmm(self.visible_bias, hidden - self.hidden_offset, self.weights.T)

    def hidden_probabilities(self, visible: torch.Tensor) -> torch.Tensor:
        """p(h_j = 1 | v), `[N, hidden]`."""
        return torch.sigmoid(self.hidden_logits(visible))

    def visible_probabilities(self, hidden: torch.Tensor) -> torch.Tensor:
        """p(v_i = 1 | h), `[N, visible]`."""
        return torch.sigmoid(self.visible_logits(hidden))

    def free_energy(self, visible: torch.Tensor) -> torch.Tensor:
        """F(v) = -log sum_h exp(-E(v, h)) of the standard form: -b^T v - sum_j softplus(c_j + v^T W_j), `[N]`."""
        weights, visible_bias, hidden_bias = self.standard_form()
        hidden_input = torch.addmm(hidden_bias, visible, weights)
        return -(visible @ visible_bias) - torch.nn.functional.softplus(hidden_input).sum(dim=1)

    def gibbs(self, visible: torch.Tensor, steps: int, generator: Optional[torch.Generator] = None,
              first_hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`steps` rounds of block Gibbs sampling, h ~ p(h|v) then v ~ p(v|h), from `visible`; the visible
        states after the last round. `first_hidden`: p(h|visible) when the caller has it already."""
        hidden = self.hidden_probabilities(visible) if first_hidden is None else first_hidden
        for step in range(steps):
            if step:
                hidden = self.hidden_probabilities(visible)
            visible = bernoulli(self.visible_probabilities(bernoulli(hidden, generator)), generator)
        return visible

    def to(self, device: torch.device) -> "RBM":
        return RBM(*(tensor.to(device) for tensor in self.state_dict().values()))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights, "visible_bias": self.visible_bias, "hidden_bias": self.hidden_bias,
                "visible_offset": self.visible_offset, "hidden_offset": self.hidden_offset}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], device: torch.device) -> "RBM":
        return cls(*(state[name].to(device) for name in
                     ("weights", "visible_bias", "hidden_bias", "visible_offset", "hidden_offset")))


class PhaseStatistics(NamedTuple):
    """Expectations of -dE/dtheta under one distribution over visible states (hiddens given by p(h|v))."""

    weights: torch.Tensor  # E[(v - mu)(h - lambda)^T], `[visible, hidden]`
    visible: torch.Tensor  # E[v]
    hidden: torch.Tensor  # E[p(h|v)]


def phase_statistics(rbm: RBM, visible: torch.Tensor, hidden: Optional[torch.Tensor] = None,
                     weights: Optional[torch.Tensor] = None) -> PhaseStatistics:
    """Expectations over the rows of `visible` (uniform, or under `weights` summing to 1), each row's hidden
    units summed out exactly through p(h|v) (Hinton's guide: probabilities, not samples, for h).
    `hidden`: p(h|visible) when the caller has it already."""
    hidden = rbm.hidden_probabilities(visible) if hidden is None else hidden
    if weights is None:
        weights = torch.full((visible.shape[0],), 1.0 / visible.shape[0], device=visible.device, dtype=visible.dtype)
    weighted = (visible - rbm.visible_offset) * weights.unsqueeze(1)
    return PhaseStatistics(weighted.T @ (hidden - rbm.hidden_offset), weights @ visible, weights @ hidden)


class GradientStatistics(NamedTuple):
    """The estimated gradient of the mean log-likelihood (positive minus negative phase) and the data means
    the centering offsets follow. Means over the batch, so processes with equal shards can average them."""

    weights: torch.Tensor
    visible_bias: torch.Tensor
    hidden_bias: torch.Tensor
    data_visible: torch.Tensor  # <v>_data
    data_hidden: torch.Tensor  # <p(h|v)>_data


def gradient_statistics(rbm: RBM, data: torch.Tensor, model_samples: torch.Tensor,
                        data_hidden: Optional[torch.Tensor] = None) -> GradientStatistics:
    """d mean log p(data) / d(W, b, c) = <-dE/dtheta>_data - <-dE/dtheta>_model, the model's expectation
    taken over `model_samples` (CD-k: chains started at the data; PCD: the persistent chains)."""
    positive = phase_statistics(rbm, data, data_hidden)
    negative = phase_statistics(rbm, model_samples)
    return GradientStatistics(positive.weights - negative.weights, positive.visible - negative.visible,
                              positive.hidden - negative.hidden, positive.visible, positive.hidden)


class MomentumUpdate:
    """Gradient ascent with momentum and L2 weight decay on the weights (Hinton's guide, section 9-10):
    delta <- momentum * delta + lr * (gradient - decay * W); theta <- theta + delta. Centered, the offsets
    then move towards the data means and the biases absorb the move, leaving the distribution unchanged."""

    def __init__(self, rbm: RBM) -> None:
        self.velocity = {"weights": torch.zeros_like(rbm.weights), "visible_bias": torch.zeros_like(rbm.visible_bias),
                         "hidden_bias": torch.zeros_like(rbm.hidden_bias)}

    def apply(self, rbm: RBM, gradient: GradientStatistics, lr: float, momentum: float, weight_decay: float,
              centering_rate: float = 0.0) -> None:
        """One update of `rbm` in place; `centering_rate` 0 leaves the offsets where they are."""
        steps = {"weights": gradient.weights - weight_decay * rbm.weights,
                 "visible_bias": gradient.visible_bias, "hidden_bias": gradient.hidden_bias}
        for name, step in steps.items():
            velocity = self.velocity[name].mul_(momentum).add_(step, alpha=lr)
            getattr(rbm, name).add_(velocity)
        if centering_rate:
            visible_move = centering_rate * (gradient.data_visible - rbm.visible_offset)
            hidden_move = centering_rate * (gradient.data_hidden - rbm.hidden_offset)
            # Keep b - W lambda and c - W^T mu (the standard form) fixed while the offsets move.
            rbm.visible_bias.add_(rbm.weights @ hidden_move)
            rbm.hidden_bias.add_(visible_move @ rbm.weights)
            rbm.visible_offset.add_(visible_move)
            rbm.hidden_offset.add_(hidden_move)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.velocity)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, tensor in self.velocity.items():
            tensor.copy_(state[name])


def reconstruction_error(rbm: RBM, visible: torch.Tensor, hidden: torch.Tensor,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Mean over images of the summed squared difference between v and p(v|h), h ~ p(h|v) given as `hidden`
    probabilities (Hinton's guide, section 5): cheap to watch, but no measure of the likelihood."""
    reconstruction = rbm.visible_probabilities(bernoulli(hidden, generator))
    return (visible - reconstruction).square().sum(dim=1).mean()


class RBMTrainer:
    """One RBM's training by CD-k or PCD: the negative phase's chains, the momentum update and the schedule
    of the step size and momentum over `total_steps` updates."""

    def __init__(self, rbm: RBM, config: RBMTrainConfig, model: RBMConfig, total_steps: int,
                 batches_per_epoch: int, generator: torch.Generator) -> None:
        self.rbm = rbm
        self.config = config
        self.centering_rate = model.centering_rate if model.centered else 0.0
        self.total_steps = total_steps
        self.momentum_steps = round(config.momentum_epochs * batches_per_epoch)
        self.generator = generator
        self.update = MomentumUpdate(rbm)
        self.chains: Optional[PersistentChains] = None
        if config.method == "pcd":
            # Started as samples of the pixels-independent model the initial biases define.
            start = torch.sigmoid(rbm.standard_form()[1]).expand(config.chains or config.batch_size, -1)
            self.chains = PersistentChains(bernoulli(start, generator))

    def schedule(self, step: int) -> tuple[float, float]:
        """(step size, momentum) of update number `step` (0-based)."""
        config = self.config
        lr = config.lr * (1.0 - step / self.total_steps if config.lr_schedule == "linear" else 1.0)
        return lr, config.initial_momentum if step < self.momentum_steps else config.momentum

    def step(self, data: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """One update on a batch of flat binary `data`; the batch's reconstruction error, on the device."""
        rbm, generator, steps = self.rbm, self.generator, self.config.gibbs_steps
        data_hidden = rbm.hidden_probabilities(data)
        if self.chains is None:
            samples = rbm.gibbs(data, steps, generator, first_hidden=data_hidden)
        else:
            samples = rbm.gibbs(self.chains.states, steps, generator)
            self.chains.states = samples
        gradient = gradient_statistics(rbm, data, samples, data_hidden)
        distributed.average_tensors(gradient)  # data-parallel ranks: the mean over the global batch
        error = reconstruction_error(rbm, data, data_hidden, generator)
        lr, momentum = self.schedule(step)
        self.update.apply(rbm, gradient, lr, momentum, self.config.weight_decay, self.centering_rate)
        return {"losses/reconstruction": error}

    def state_dict(self) -> dict[str, Any]:
        return {"update": self.update.state_dict(),
                "chains": None if self.chains is None else self.chains.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.update.load_state_dict(state["update"])
        if self.chains is not None:
            self.chains.load_state_dict(state["chains"])
