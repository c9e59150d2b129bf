"""What `rlgen.load` returns: a trained agent, classifier or generative model wrapped for use from Python,
holding the task's own networks (numpy or tensors in, numpy or tensors out)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from agents.evaluation import play_games
from core.errors import UserError
from envs import make_env
from generative.metrics.ais import ais_log_partition, exact_log_partition
from generative.metrics.iwae import iwae_log_likelihood
from generative.rbm import bernoulli
from generative.rbm_task import EXACT_UNITS

Values = Union[np.ndarray, torch.Tensor, Sequence[Any]]


class Source(NamedTuple):
    """Where a loaded model comes from."""

    run_dir: Path
    checkpoint: Path  # the checkpoint file restored: the run's newest one that loads
    config: Any  # the run's config dataclass, as its config.yaml holds it
    step: int  # the task step the checkpoint was saved at
    device: torch.device  # where the loaded networks live and compute


class Loaded:
    """What every loaded run has: `run_dir`, `checkpoint`, `config`, `step` and `device` (see `Source`)."""

    def __init__(self, source: Source) -> None:
        self.run_dir, self.checkpoint, self.config, self.step, self.device = source

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.run_dir)!r}, task={self.config.task!r}, step={self.step})"


def _as_batch(values: Values, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
              what: str) -> tuple[torch.Tensor, bool]:
    """`values` as a batch tensor of `dtype` on `device`, and whether it was one item of `shape` (then batched
    as one): numpy arrays, tensors and nested lists are taken alike."""
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    tensor = tensor.to(device=device, dtype=dtype)
    if tuple(tensor.shape) == shape:
        return tensor.unsqueeze(0), True
    if tuple(tensor.shape[1:]) == shape:
        return tensor, False
    batch = ", ".join(map(str, ("N", *shape)))
    raise UserError(f"{what} of shape {tuple(tensor.shape)}: expected {shape} (one) or ({batch}) (a batch)")


def _as_images(values: Values, image_shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, bool]:
    """Images in [0, 1] as a float32 `(N, C, H, W)` batch: one image or a batch, image-shaped or flat."""
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    pixels = math.prod(image_shape)
    if tensor.dim() == 1 and tensor.numel() == pixels or tensor.dim() == 2 and tensor.shape[1] == pixels:
        tensor = tensor.reshape(-1, *image_shape) if tensor.dim() == 2 else tensor.reshape(image_shape)
    return _as_batch(tensor, image_shape, torch.float32, device, "images")


class Agent(Loaded):
    """A trained Q-learning agent (tasks dqn and pqn, any env): greedy actions and Q-values of observations as
    the run's environment makes them (`make_env`: Atari's stacks of four 84x84 uint8 frames, CartPole's four
    floats). `network` is the task's Q-network (the DQN's online one), `agent` the task's DQNAgent or PQNAgent."""

    def __init__(self, source: Source, agent: Any, network: nn.Module, obs_shape: tuple[int, ...],
                 obs_dtype: np.dtype, num_actions: int) -> None:
        super().__init__(source)
        self.agent = agent
        self.network = network
        self.obs_shape = obs_shape
        self.obs_dtype = obs_dtype
        self.num_actions = num_actions
        self._torch_dtype = torch.from_numpy(np.zeros(0, dtype=obs_dtype)).dtype

    def _obs(self, obs: Values) -> tuple[torch.Tensor, bool]:
        return _as_batch(obs, self.obs_shape, self._torch_dtype, self.device, "observation")

    @torch.no_grad()
    def act(self, obs: Values, epsilon: float = 0.0) -> Union[np.ndarray, np.integer]:
        """The greedy action (epsilon 0) or an epsilon-greedy one: one observation -> a numpy integer, a batch
        `(N, *obs_shape)` -> `(N,)` int64 actions. Numpy arrays and tensors alike, cast to the env's dtype."""
        batch, single = self._obs(obs)
        actions = self.agent.act(batch, epsilon).cpu().numpy()
        return actions[0] if single else actions

    @torch.no_grad()
    def q_values(self, obs: Values) -> np.ndarray:
        """Q(obs, a) of every action as float32: `(num_actions,)` for one observation, `(N, num_actions)` for a
        batch."""
        batch, single = self._obs(obs)
        values = self.network(batch).float().cpu().numpy()
        return values[0] if single else values

    def make_env(self, num_envs: int = 1, seed: Optional[int] = None, evaluation: bool = True) -> Any:
        """A vector env of the run's kind and settings (`envs.VectorEnv`: `reset()` -> observations, `step(actions)`
        -> a StepResult with `.obs`), with the evaluation protocol and seeds unless `evaluation` is False."""

        env_config = dataclasses.replace(self.config.env, num_envs=num_envs)
        return make_env(env_config, seed=self.config.seed if seed is None else seed, evaluation=evaluation)

    def play(self, episodes: int = 10, epsilon: Optional[float] = None, seed: Optional[int] = None) -> list[float]:
        """Raw scores of `episodes` whole games by the run's evaluation protocol (agents/evaluation.py), at the
        run's `eval.epsilon` unless given."""

        settings = dataclasses.replace(self.config.eval, episodes=episodes, gameplay_frames=0,
                                       epsilon=self.config.eval.epsilon if epsilon is None else epsilon)
        scores, _ = play_games(self.agent, self.config.env, settings, self.config.seed if seed is None else seed,
                               self.device)
        return scores


class Classifier(Loaded):
    """A trained classifier (task classifier: XOR, MNIST, any registered dataset). `model` maps a batch of
    inputs to one logit per class."""

    def __init__(self, source: Source, model: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__(source)
        self.model = model
        self.input_shape = input_shape
        self.num_classes = num_classes

    @torch.no_grad()
    def logits(self, x: Values) -> np.ndarray:
        """float32 logits: `(num_classes,)` for one input of `input_shape`, `(N, num_classes)` for a batch."""
        batch, single = _as_batch(x, self.input_shape, torch.float32, self.device, "input")
        logits = self.model(batch).float().cpu().numpy()
        return logits[0] if single else logits

    def predict(self, x: Values) -> Union[np.ndarray, np.integer]:
        """The most likely class: a numpy integer for one input, `(N,)` int64 classes for a batch."""
        return np.argmax(self.logits(x), axis=-1)

    def probabilities(self, x: Values) -> np.ndarray:
        """Softmax of the logits, shaped like them."""
        return torch.softmax(torch.from_numpy(self.logits(x)), dim=-1).numpy()


class VAEModel(Loaded):
    """A trained VAE (task vae). Images are `(N, C, H, W)` in [0, 1] (binarized ones for a Bernoulli decoder,
    as the run's test set), or one image, or flat; `model` is the task's generative.vae.VAE."""

    def __init__(self, source: Source, model: nn.Module) -> None:
        super().__init__(source)
        self.model = model
        self.image_shape: tuple[int, ...] = tuple(model.image_shape)
        self.latent: int = model.config.latent

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """`n` images from the prior, `(n, C, H, W)` in [0, 1]: the decoder's mean image of z ~ N(0, I)."""
        z = torch.randn(n, self.latent, device=self.device, generator=generator)
        return self.decode(z)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """`(N, latent)` codes -> their mean images, `(N, C, H, W)` in [0, 1]."""
        return self.model.mean_image(z.to(self.device, torch.float32))

    @torch.no_grad()
    def encode(self, images: Values) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior q(z|x) of each image: its mean and log variance, each `(N, latent)`."""
        return self.model.encode(_as_images(images, self.image_shape, self.device)[0])

    def log_likelihood(self, images: Values, samples: Optional[int] = None,
                       batch_size: Optional[int] = None) -> torch.Tensor:
        """log p(x) of each image in nats, `(N,)` (0-d for one image), by the `samples`-sample importance-weighted
        bound (Burda et al. 2016; generative/metrics/iwae.py): a lower bound that tightens as `samples` grows. The
        run's eval/test_nll is minus its mean over the test images at the run's eval.k (the default here)."""

        batch, single = _as_images(images, self.image_shape, self.device)
        settings = self.config.eval
        bounds = iwae_log_likelihood(self.model, batch, samples or settings.k, batch_size or settings.batch_size)
        return bounds[0] if single else bounds


class RBMModel(Loaded):
    """A trained RBM or deep belief net (tasks rbm, dbn): Gibbs samples and log-likelihoods. `dbn` is the task's
    generative.dbn.DBN of the layers trained so far (an RBM is a stack of one)."""

    def __init__(self, source: Source, dbn: Any, image_shape: tuple[int, ...], base_biases: torch.Tensor) -> None:
        super().__init__(source)
        self.dbn = dbn
        self.image_shape = image_shape
        self._base_biases = base_biases
        self._log_z: dict[tuple[str, int, int], float] = {}

    @torch.no_grad()
    def sample(self, n: int, gibbs_steps: int = 1000, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """`n` images, `(n, C, H, W)` in [0, 1]: chains of the top RBM started from uniform noise, `gibbs_steps`
        sweeps, then passed down the stack to p(v|h) at the bottom (as the run's `samples/` grids show them)."""

        top = self.dbn.layers[-1]
        noise = bernoulli(torch.full((n, top.visible), 0.5, device=self.device), generator)
        return self.dbn.sample(noise, gibbs_steps, generator).reshape(n, *self.image_shape)

    def log_partition(self, method: str = "auto", runs: Optional[int] = None,
                      temperatures: Optional[int] = None) -> float:
        """log Z of the top RBM: `exact` by enumeration (a layer of at most 20 units on one side), `ais` by
        annealed importance sampling from the run's base-rate model (`runs` chains over `temperatures`
        intervals; the run's eval.ais_runs and eval.ais_temperatures, the paper's 100 and 14,500, by default:
        minutes on a CPU), `auto` exact where it can be. Computed once per setting; the AIS one is biased low."""

        top, settings = self.dbn.layers[-1], self.config.eval
        if method == "auto":
            method = "exact" if min(top.visible, top.hidden) <= EXACT_UNITS else "ais"
        if method not in ("exact", "ais"):
            raise UserError(f"log_partition: method {method!r} is not one of auto, exact, ais")
        if method == "exact" and min(top.visible, top.hidden) > EXACT_UNITS:
            raise UserError(f"log_partition: exact enumerates 2^{min(top.visible, top.hidden)} states; it takes a "
                            f"top layer of at most {EXACT_UNITS} units on one side (use ais)")
        runs, temperatures = runs or settings.ais_runs, temperatures or settings.ais_temperatures
        key = (method, runs, temperatures) if method == "ais" else (method, 0, 0)
        if key not in self._log_z:
            if method == "exact":
                self._log_z[key] = float(exact_log_partition(top, EXACT_UNITS))
            else:
                # Seeded as the task's evaluation seeds its AIS.
                generator = torch.Generator(device=self.device).manual_seed(self.config.seed + 1)
                self._log_z[key] = ais_log_partition(top, self._base_biases, runs, temperatures, generator).log_z
        return self._log_z[key]

    @torch.no_grad()
    def log_likelihood(self, images: Values, method: str = "auto", runs: Optional[int] = None,
                       temperatures: Optional[int] = None,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """log p(v) of each binary image in nats, float64 `(N,)` (0-d for one): for an RBM -F(v) - log Z exactly
        but for log Z's estimate (see `log_partition`); for a DBN the one-sample estimate of the variational lower
        bound (Hinton et al. 2006) the dbn task reports. Averaged over the test set: the run's eval/test_loglik."""
        batch, single = _as_images(images, self.image_shape, self.device)
        log_z = self.log_partition(method, runs, temperatures)
        values = self.dbn.log_likelihood_bound(batch.flatten(1), log_z, generator)
        return values[0] if single else values


class GANModel(Loaded):
    """A trained GAN's generator (task gan): the weight average when the run kept one (train.ema_decay > 0), as
    its evaluations sample; `network` maps z `(N, latent)` to images in [-1, 1]."""

    def __init__(self, source: Source, network: nn.Module) -> None:
        super().__init__(source)
        self.network = network
        self.latent: int = source.config.model.latent

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """`(N, latent)` codes -> `(N, 1, 28, 28)` images in [0, 1]."""
        return self.network(z.to(self.device, torch.float32)).add_(1).div_(2)

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """`n` images of z ~ N(0, I), `(n, 1, 28, 28)` in [0, 1], made eval.batch_size at a time."""
        size = self.config.eval.batch_size
        chunks = [self.generate(torch.randn(min(size, n - start), self.latent, device=self.device,
                                            generator=generator)) for start in range(0, n, size)]
        return torch.cat(chunks)
