"""VAE training speed on MNIST: rlgen's trainer against the same updates without any data path, and
against the usual `torch.utils.data.DataLoader` loop over the same images (PyTorch's VAE example:
784-400-20 with ReLU, batch 128, Adam 1e-3, dynamic binarization in both).

Every epoch (round) of each variant is run in chunks of about 52 batches interleaved with the others', so
all three see the same machine even when its speed drifts; the ratios are taken within each round and
their medians printed as one JSON object: `overhead` = rlgen / compute-only - 1 (the cost of rlgen's data
path), `speedup` = DataLoader / rlgen, `bf16_to_fp32` = rlgen's step in bfloat16 / rlgen's step at the precision
`auto` picks here.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import generative  # noqa: F401  (registers the vae task)
from core.config import RunConfig
from core.device import resolve_device
from core.precision import native_bf16
from core.run import Run
from generative.data import DataConfig
from generative.vae import VAEModelConfig
from generative.vae_task import VAEConfig, VAETask, VAETrainConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _task(device: torch.device, data_root: str | None, precision: str = "auto") -> VAETask:
    config = VAEConfig(
        name="bench", device=str(device), precision=precision, data=DataConfig(root=data_root, binarize="dynamic"),
        model=VAEModelConfig(hidden=[400], latent=20, activation="relu"),
        train=VAETrainConfig(epochs=1000, batch_size=128),
        run=RunConfig(root=tempfile.mkdtemp(prefix="rlgen-bench-")),
    )
    config.optim.betas, config.optim.eps = None, None  # torch's Adam defaults, as the example
    return VAETask(config, Run(Path(config.run.root), config), device)


def _rlgen_steps(task: VAETask, count: int) -> float:
    _sync(task.device)
    start = time.perf_counter()
    with task.precision.autocast():  # as the driver runs every training step
        for _ in range(count):
            task.train_step()
    _sync(task.device)
    return time.perf_counter() - start


def _compute_only_steps(task: VAETask, fixed_batch: torch.Tensor, count: int) -> float:
    """The trainer's own step with the data path replaced by one fixed batch: pure compute."""
    real_next = task.batches.next
    task.batches.next = lambda: fixed_batch  # type: ignore[method-assign]
    try:
        return _rlgen_steps(task, count)
    finally:
        task.batches.next = real_next  # type: ignore[method-assign]


class ExampleVAE(nn.Module):
    """The model of PyTorch's examples/vae, written the way that example writes it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(hidden), self.fc22(hidden)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.fc4(F.relu(self.fc3(z))), mu, logvar


class ExampleLoop:
    """PyTorch's example training loop over a shuffled DataLoader, run a given number of batches at a
    time; a new pass (with its new iterator) starts when the loader is exhausted."""

    def __init__(self, grey: torch.Tensor, device: torch.device) -> None:
        self.loader = DataLoader(TensorDataset(grey), batch_size=128, shuffle=True, drop_last=True)
        self.batches = iter(self.loader)
        self.device = device
        self.model = ExampleVAE().to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def _next(self) -> torch.Tensor:
        try:
            return next(self.batches)[0]
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)[0]

    def steps(self, count: int) -> float:
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(count):
            images = torch.bernoulli(self._next().to(self.device))
            logits, mu, logvar = self.model(images)
            reconstruction = F.binary_cross_entropy_with_logits(logits, images.view(-1, 784), reduction="sum")
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            self.optimizer.zero_grad()
            (reconstruction + kl).backward()
            self.optimizer.step()
        _sync(self.device)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=5, help="epochs of each variant")
    parser.add_argument("--chunks", type=int, default=9, help="interleaved parts of every epoch")
    parser.add_argument("--data-root", default=os.environ.get("RLGEN_DATA"), help="folder holding mnist/")
    args = parser.parse_args()

    device = resolve_device(args.device)
    task = _task(device, args.data_root)
    bf16_task = _task(device, args.data_root, precision="bf16")
    fixed_batch = task.batches.next()
    example = ExampleLoop(task.data.train.cpu().float().div(255.0), device)
    variants = {
        "rlgen": lambda count: _rlgen_steps(task, count),
        "compute_only": lambda count: _compute_only_steps(task, fixed_batch, count),
        "dataloader": example.steps,
        "rlgen_bf16": lambda count: _rlgen_steps(bf16_task, count),
    }
    per_epoch = task.batches.batches_per_epoch
    chunk_sizes = [per_epoch // args.chunks + (i < per_epoch % args.chunks) for i in range(args.chunks)]
    for run_variant in variants.values():  # warm-up
        run_variant(chunk_sizes[0])
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        epoch = dict.fromkeys(variants, 0.0)
        for index, size in enumerate(chunk_sizes):
            names = list(variants)
            first = index % len(names)
            for name in names[first:] + names[:first]:  # rotate who goes first
                epoch[name] += variants[name](size)
        for name, seconds in epoch.items():
            times[name].append(seconds)
    median = {name: statistics.median(values) for name, values in times.items()}
    # Ratios within a round, then their medians: the machine's speed drifts between rounds.
    overheads = [a / b - 1 for a, b in zip(times["rlgen"], times["compute_only"])]
    speedups = [c / a for a, c in zip(times["rlgen"], times["dataloader"])]
    bf16_ratios = [b / a for a, b in zip(times["rlgen"], times["rlgen_bf16"])]
    print(json.dumps({
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "batches_per_epoch": task.batches.batches_per_epoch,
        "precision": task.precision.name,
        "native_bf16": native_bf16(device),
        "rounds": args.rounds,
        "chunks": args.chunks,
        "rlgen_epoch_s": round(median["rlgen"], 3),
        "compute_only_epoch_s": round(median["compute_only"], 3),
        "dataloader_epoch_s": round(median["dataloader"], 3),
        "overhead": round(statistics.median(overheads), 3),
        "speedup": round(statistics.median(speedups), 3),
        "rlgen_bf16_epoch_s": round(median["rlgen_bf16"], 3),
        "bf16_to_fp32": round(statistics.median(bf16_ratios), 3),
        "bf16_to_fp32_rounds": [round(value, 3) for value in bf16_ratios],
        "overhead_rounds": [round(value, 3) for value in overheads],
        "speedup_rounds": [round(value, 3) for value in speedups],
        "epoch_s_rounds": {name: [round(value, 3) for value in values] for name, values in times.items()},
    }))


if __name__ == "__main__":
    main()
