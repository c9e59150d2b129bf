"""The `rbm` and `dbn` tasks: an RBM, or a greedy stack of them, trained by CD-k or PCD on device-resident
images, with the test log-likelihood estimated by AIS (Salakhutdinov & Murray 2008).

Both are one trainer over a list of layers: the RBM is a stack of one. A step is one update of the layer
being trained; layer l trains for its epochs, then layer l + 1 starts on what layer l makes of the data.
During training an evaluation runs a short AIS (`eval.quick_ais_*`, tags ending in `_quick`); the final
one (and `rlgen eval`) the paper's 100 runs over 14,500 temperatures. Both log Gibbs-chain grids and filters.
"""
from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import time
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, List

import torch

from core import distributed
from core.config import ExperimentConfig, RunConfig
from core.errors import UserError
from core.images import make_grid
from core.run import Run
from core.sampling import prepare
from core.task import TASKS
from generative.data import DataConfig
from generative.dbn import DBN, DBNLayerConfig, check_propagation, layer_train_config
from generative.image_task import ImageTask
from generative.metrics.ais import (ais_log_partition, base_rate_biases, exact_log_partition, mean_log_likelihood,
                                    mean_reconstruction_error, pseudo_log_likelihood)
from generative.metrics.reverse_ais import reverse_ais_log_likelihoods
from generative.rbm import RBM, RBMConfig, RBMTrainConfig, RBMTrainer, bernoulli, check_train_config
from generative.rbm_init import trained_rbm

log = logging.getLogger("rlgen")

# Enumerating 2^20 states of the smaller layer takes about a second; beyond that only AIS.
EXACT_UNITS = 20
# Training images binarized and passed up at once when a layer's mean input is measured.
INPUT_CHUNK = 10000


@dataclass
class RBMEvalConfig:
    """The log-likelihood estimate and the image grids."""

    ais_runs: int = 100  # AIS runs of the final estimate (Salakhutdinov & Murray: 100)
    ais_temperatures: int = 14500  # intervals of the final schedule (the paper's 14,500)
    quick_ais_runs: int = 20  # AIS runs during training
    quick_ais_temperatures: int = 1000  # intervals during training, spread over the paper's three segments
    images: int = 0  # test images of the log-likelihood; 0 = all
    grid_chains: int = 10  # Gibbs chains per sample grid, one row each
    grid_snapshots: int = 10  # images of each chain, one every grid_gibbs_steps sweeps
    grid_gibbs_steps: int = 200  # Gibbs sweeps between two images of a chain
    filters: int = 100  # hidden units whose weights are shown as image-shaped filters
    # RAISE (reverse AIS, Burda et al. 2015) at the final evaluation, a check on AIS that needs no log Z: on this
    # many test images drawn at random (0 = off; one RBM only), `raise_chains` chains each, over
    # `raise_temperatures` intervals (0 = ais_temperatures). Costs images x chains / ais_runs times the AIS.
    raise_images: int = 0
    raise_chains: int = 1
    raise_temperatures: int = 0


@dataclass
class RBMExperimentConfig(ExperimentConfig):
    """An RBM experiment: data, model, training and evaluation."""

    task: str = "rbm"
    data: DataConfig = field(default_factory=DataConfig)
    model: RBMConfig = field(default_factory=RBMConfig)
    train: RBMTrainConfig = field(default_factory=RBMTrainConfig)
    eval: RBMEvalConfig = field(default_factory=RBMEvalConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(log_every=100, eval_every=6000, checkpoint_every=6000))


def _paper_layers() -> list[DBNLayerConfig]:
    return [DBNLayerConfig(hidden=500), DBNLayerConfig(hidden=500), DBNLayerConfig(hidden=2000)]


@dataclass
class DBNModelConfig:
    """The stack, bottom first (Hinton, Osindero & Teh 2006: 784-500-500-2000)."""

    layers: List[DBNLayerConfig] = field(default_factory=_paper_layers)  # one RBM per entry
    propagate: str = "probabilities"  # what a layer trains on: probabilities | samples of the hidden units below


@dataclass
class DBNExperimentConfig(ExperimentConfig):
    """A deep belief net experiment; `train` applies to every layer unless the layer says otherwise."""

    task: str = "dbn"
    data: DataConfig = field(default_factory=DataConfig)
    model: DBNModelConfig = field(default_factory=DBNModelConfig)
    train: RBMTrainConfig = field(default_factory=RBMTrainConfig)
    eval: RBMEvalConfig = field(default_factory=RBMEvalConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(log_every=100, eval_every=6000, checkpoint_every=6000))


def _check_eval(settings: RBMEvalConfig) -> None:
    counts = (settings.ais_runs, settings.quick_ais_runs, settings.grid_chains, settings.grid_snapshots)
    if min(counts) < 1 or settings.images < 0 or settings.filters < 0 or settings.grid_gibbs_steps < 0:
        raise UserError("eval: ais_runs, quick_ais_runs, grid_chains and grid_snapshots must be >= 1; images, "
                        "filters and grid_gibbs_steps >= 0")
    if min(settings.ais_temperatures, settings.quick_ais_temperatures) < 3:
        raise UserError("eval: ais_temperatures and quick_ais_temperatures must be >= 3 (one per schedule segment)")
    if settings.raise_images < 0 or settings.raise_chains < 1 or 0 < settings.raise_temperatures < 3:
        raise UserError("eval: raise_images must be >= 0, raise_chains >= 1, raise_temperatures 0 (the AIS's) or >= 3")


class LayerwiseTask(ImageTask):
    """Greedy layer-by-layer training of a stack of RBMs and its evaluation; subclasses name the layers."""

    data_parallel = True
    loglik_tag = "eval/test_loglik"
    # The update is written as data minus model statistics without autograd; bfloat16 products would round
    # those sums, so these tasks compute in float32 (tf32 only changes CUDA matmuls).
    precisions = ("auto", "fp32", "tf32")
    # The layers and their trainer are rebuilt from the checkpoint (load_state_dict), the rest is declared.
    state_attributes = ("batches", "generator")

    def __init__(self, config: Any, run: Run, device: torch.device) -> None:
        self.layer_configs = self._layers(config)
        for index, (model, train) in enumerate(self.layer_configs):
            check_train_config(train, self._settings_key(index), untrained=bool(model.init_from))
            if model.hidden < 1 or not 0 < model.mean_clip < 0.5 or not 0 <= model.centering_rate <= 1:
                raise UserError("model: hidden must be >= 1, mean_clip in (0, 0.5), centering_rate in [0, 1]")
        _check_eval(config.eval)
        if config.eval.raise_images and len(self.layer_configs) > 1:
            raise UserError(f"eval.raise_images: RAISE estimates one RBM's log-likelihood; this DBN has "
                            f"{len(self.layer_configs)} layers")
        # With data-parallel ranks each takes its shard of every global batch and the gradient statistics
        # are averaged over the ranks (RBMTrainer.step).
        super().__init__(config, run, device)
        self.test_images = self.test_images.flatten(1)
        steps = [self.steps_for(train.epochs) if train.epochs else 0 for _, train in self.layer_configs]
        if not sum(steps):
            raise UserError("every layer has epochs 0: nothing to train (`rlgen eval` evaluates a trained run)")
        self.layer_ends = [sum(steps[:index + 1]) for index in range(len(steps))]
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.input_means: dict[int, torch.Tensor] = {}
        self.dbn = DBN([])
        self._start_due_layers(training=True)
        self._separate_rank_streams()

    @abstractmethod
    def _layers(self, config: Any) -> list[tuple[RBMConfig, RBMTrainConfig]]:
        """Each layer's RBM config and training settings, bottom first."""

    def _settings_key(self, index: int) -> str:
        """Where the training settings of layer `index` come from, for error messages."""
        return "train"

    def _model_key(self, index: int) -> str:
        """Where the RBM settings of layer `index` come from, for error messages."""
        return "model"

    @property
    def total_steps(self) -> int:
        return self.layer_ends[-1]

    @property
    def sample_inputs(self) -> bool:
        return False

    def _layer_start(self, index: int) -> int:
        return self.layer_ends[index - 1] if index else 0

    def _separate_rank_streams(self) -> None:
        """Data-parallel ranks other than 0 draw their Gibbs samples from streams of their own (seeded by
        rank and step), so their chains do not repeat rank 0's random numbers."""
        rank = self.shard[0]
        if rank:
            self.generator.manual_seed(self.config.seed + 1_000_003 * rank + self.step)

    def _trainer(self, index: int) -> RBMTrainer:
        model, train = self.layer_configs[index]
        world = self.shard[1]
        if world > 1:
            # Each rank holds its part of the persistent chains, as of the global batch.
            train = dataclasses.replace(train, batch_size=self.local_batch, chains=train.chains // world)
        steps = self.layer_ends[index] - self._layer_start(index)
        return RBMTrainer(self.dbn.layers[index], train, model, steps, self.batches.batches_per_epoch, self.generator)

    @torch.no_grad()
    def _input_mean(self, depth: int) -> torch.Tensor:
        """Mean over the training images of what layer `depth` sees; at the bottom the mean of the pixels as
        the model trains on them (how often a thresholded pixel is on is not its mean grey level)."""
        if depth not in self.input_means:
            mode = self.config.data.binarize
            if depth == 0 and mode == "dynamic":
                # The expectation of a fresh Bernoulli draw, exactly.
                self.input_means[0] = self.data.pixel_means.flatten()
            else:
                # Its own generator: evaluations must not move the training's random numbers.
                generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
                threshold, images = self.config.data.threshold, self.batches.images
                units = self.dbn.layers[depth - 1].hidden if depth else images[0].numel()
                total = torch.zeros(units, device=self.device)
                for start in range(0, images.shape[0], INPUT_CHUNK):
                    chunk = prepare(images[start:start + INPUT_CHUNK], mode, threshold, generator).flatten(1)
                    total += self.dbn.mean_input(chunk, depth, self.sample_inputs, generator) * chunk.shape[0]
                self.input_means[depth] = total / images.shape[0]
        return self.input_means[depth]

    def _start_due_layers(self, training: bool) -> None:
        """Start each layer whose turn has come by this step: the one about to train (when `training`) and the
        loaded ones that train for 0 epochs, which sit between it and the layers below or on top of the stack."""
        while (index := len(self.dbn.layers)) < len(self.layer_configs) and self._layer_start(index) <= self.step \
                and (training or self.layer_ends[index] == self._layer_start(index)):
            self._start_layer(index)

    def _start_layer(self, index: int) -> None:
        """A new top RBM on what the layers below make of the data: initialised from its mean input, or loaded
        from the trained run that `init_from` names."""
        model, _ = self.layer_configs[index]
        if model.init_from:
            layer = self._loaded_layer(index, model)
        else:
            layer = RBM.initialise(self._input_mean(index), model, self.generator)
        distributed.broadcast_tensors(list(layer.state_dict().values()))  # every rank starts from rank 0's
        self.dbn.layers.append(layer)
        self.trainer = self._trainer(index)

    def _loaded_layer(self, index: int, model: RBMConfig) -> RBM:
        """Layer `index` of the run `model.init_from` names, checked against the units below and `model.hidden`."""
        key = f"{self._model_key(index)}.init_from"
        loaded = trained_rbm(model.init_from, index, key, self.device)
        visible = self.dbn.layers[index - 1].hidden if index else self.test_images.shape[1]
        if (loaded.rbm.visible, loaded.rbm.hidden) != (visible, model.hidden):
            raise UserError(f"{key}: {loaded.checkpoint} has a {loaded.rbm.visible}-{loaded.rbm.hidden} RBM at depth "
                            f"{index}; this layer is {visible}-{model.hidden} ({self._model_key(index)}.hidden)")
        log.info("layer %d starts from %s (step %d)", index, loaded.checkpoint, loaded.step)
        return loaded.rbm

    def train_step(self) -> dict[str, torch.Tensor]:
        layer = bisect.bisect_right(self.layer_ends, self.step)
        self._start_due_layers(training=True)
        data = self.dbn.up(self.batches.next().flatten(1), layer, self.sample_inputs, self.generator)
        local_step = self.step - self._layer_start(layer)
        figures: dict[str, Any] = self.trainer.step(data, local_step)
        lr, momentum = self.trainer.schedule(local_step)
        self.step += 1
        figures.update({"charts/epoch": float(self.batches.epoch), "charts/lr": lr, "charts/momentum": momentum})
        if len(self.layer_configs) > 1:
            figures["charts/layer"] = float(layer)
        return figures

    @torch.no_grad()
    def evaluate(self, final: bool = False) -> dict[str, float]:
        self._start_due_layers(training=False)
        settings, top = self.config.eval, self.dbn.layers[-1]
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed + 1)
        depth = len(self.dbn.layers) - 1
        base = base_rate_biases(self._input_mean(depth), self.layer_configs[depth][0].mean_clip)
        runs, temperatures = ((settings.ais_runs, settings.ais_temperatures) if final
                              else (settings.quick_ais_runs, settings.quick_ais_temperatures))
        start = time.perf_counter()
        estimate = ais_log_partition(top, base, runs, temperatures, generator)
        seconds = time.perf_counter() - start
        images = self.test_images[:settings.images or None]
        suffix = "" if final else "_quick"
        metrics = {f"eval/log_z{suffix}": estimate.log_z,
                   f"{self.loglik_tag}{suffix}": self._log_likelihood(images, estimate.log_z, generator)}
        if final:
            metrics.update({"eval/log_z_low": estimate.low, "eval/log_z_high": estimate.high,
                            "eval/ais_runs": float(runs), "eval/ais_temperatures": float(temperatures),
                            "eval/ais_seconds": seconds, "eval/test_images": float(images.shape[0]),
                            "eval/ais_log_weight_std": estimate.log_weight_std,
                            "eval/ais_effective_runs": estimate.effective_runs})
        if final and settings.raise_images:
            metrics.update(self._reverse_ais(base, estimate.log_z, generator))
        if min(top.visible, top.hidden) <= EXACT_UNITS:
            exact = exact_log_partition(top).item()
            metrics.update({"eval/log_z_exact": exact,
                            f"{self.loglik_tag}_exact": self._log_likelihood(images, exact, generator)})
        if depth == 0:
            metrics["eval/test_pseudo_loglik"] = pseudo_log_likelihood(top, images, generator)
            metrics["eval/test_reconstruction"] = mean_reconstruction_error(top, images, generator)
        self._log_grids(generator)
        return metrics

    def _reverse_ais(self, base: torch.Tensor, log_z: float, generator: torch.Generator) -> dict[str, float]:
        """RAISE's mean log-likelihood of randomly drawn test images, beside AIS's on the same images."""
        settings, rbm = self.config.eval, self.dbn.layers[0]
        count = min(settings.raise_images, self.test_images.shape[0])
        chosen = self.test_images[torch.randperm(self.test_images.shape[0], generator=generator,
                                                 device=self.device)[:count]]
        temperatures = settings.raise_temperatures or settings.ais_temperatures
        start = time.perf_counter()
        estimates = reverse_ais_log_likelihoods(rbm, base, chosen, settings.raise_chains, temperatures, generator)
        return {"eval/raise_test_loglik": float(estimates.mean()),
                "eval/test_loglik_on_raise_images": mean_log_likelihood(rbm, chosen, log_z),
                "eval/raise_test_loglik_std": float(estimates.std()) if count > 1 else 0.0,
                "eval/raise_images": float(count), "eval/raise_chains": float(settings.raise_chains),
                "eval/raise_temperatures": float(temperatures), "eval/raise_seconds": time.perf_counter() - start}

    def _log_likelihood(self, images: torch.Tensor, log_z: float, generator: torch.Generator) -> float:
        if len(self.dbn.layers) == 1:
            return mean_log_likelihood(self.dbn.layers[0], images, log_z)
        return float(self.dbn.log_likelihood_bound(images, log_z, generator).mean())

    def _chain_grid(self, starts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One row per chain of the top RBM: its state shown every grid_gibbs_steps sweeps, passed down."""
        settings, top = self.config.eval, self.dbn.layers[-1]
        frames, states = [], starts
        for _ in range(settings.grid_snapshots):
            states = top.gibbs(states, settings.grid_gibbs_steps, generator)
            frames.append(self.dbn.sample(states, 0, generator))
        return torch.stack(frames, dim=1)

    def _log_grids(self, generator: torch.Generator) -> None:
        """Chains from noise and from test digits (the digits in the first column), and the first filters."""
        settings, tb, top = self.config.eval, self.run.tb, self.dbn.layers[-1]
        depth, count, columns = len(self.dbn.layers) - 1, settings.grid_chains, settings.grid_snapshots
        noise = bernoulli(torch.full((count, top.visible), 0.5, device=self.device), generator)
        tb.image("samples/chains_from_noise", self._grid(self._chain_grid(noise, generator), columns), self.step)
        digits = self.test_images[:count]
        from_test = self._chain_grid(self.dbn.up(digits, depth, True, generator), generator)
        tb.image("samples/chains_from_test",
                 self._grid(torch.cat([digits[:, None], from_test], dim=1), columns + 1), self.step)
        if settings.filters:
            weights = self.dbn.layers[0].weights[:, :settings.filters].T
            low, high = weights.min(dim=1, keepdim=True).values, weights.max(dim=1, keepdim=True).values
            filters = (weights - low) / (high - low).clamp_min(1e-12)
            tb.image("samples/filters", self._grid(filters.unsqueeze(0), int(math.sqrt(settings.filters)) or 1),
                     self.step)

    def _grid(self, rows: torch.Tensor, columns: int) -> torch.Tensor:
        """`[rows, columns, pixels]` -> one image grid of image-shaped tiles."""
        return make_grid(rows.flatten(0, 1).reshape(-1, *self.image_shape), columns=columns)

    def state_dict(self) -> dict[str, Any]:
        return {"layers": [layer.state_dict() for layer in self.dbn.layers], "trainer": self.trainer.state_dict(),
                **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["layers"]) > len(self.layer_configs):
            raise UserError(f"the checkpoint holds {len(state['layers'])} layers; this config has "
                            f"{len(self.layer_configs)}")
        self.dbn = DBN([RBM.from_state_dict(layer, self.device) for layer in state["layers"]])
        self.input_means = {}
        self.trainer = self._trainer(len(self.dbn.layers) - 1)
        self.trainer.load_state_dict(state["trainer"])
        super().load_state_dict(state)
        self._separate_rank_streams()


@TASKS.register("rbm")
class RBMTask(LayerwiseTask):
    """A Bernoulli-Bernoulli RBM on binarized images, trained by CD-k or PCD."""

    Config = RBMExperimentConfig
    summary_metrics = ("eval/test_loglik", "eval/log_z", "eval/test_pseudo_loglik")

    def _layers(self, config: RBMExperimentConfig) -> list[tuple[RBMConfig, RBMTrainConfig]]:
        return [(config.model, config.train)]


@TASKS.register("dbn")
class DBNTask(LayerwiseTask):
    """A deep belief net trained greedily; its log-likelihood is the variational lower bound's estimate."""

    Config = DBNExperimentConfig
    summary_metrics = ("eval/test_loglik_bound", "eval/log_z")
    loglik_tag = "eval/test_loglik_bound"
    length_keys = ()  # each layer may set its own epochs, so resuming never changes the run's length

    def _layers(self, config: DBNExperimentConfig) -> list[tuple[RBMConfig, RBMTrainConfig]]:
        model = config.model
        check_propagation(model.propagate)
        if not model.layers:
            raise UserError("model.layers: a DBN needs at least one layer")
        check_train_config(config.train)
        return [(layer, layer_train_config(config.train, layer)) for layer in model.layers]

    def _settings_key(self, index: int) -> str:
        return f"model.layers[{index}]"

    def _model_key(self, index: int) -> str:
        return f"model.layers[{index}]"

    @property
    def sample_inputs(self) -> bool:
        return self.config.model.propagate == "samples"
