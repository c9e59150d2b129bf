"""VAE training speed on MNIST: rlgen's trainer against the same updates without any data path, and
against the usual `torch.utils.data.DataLoader` loop over the same images (PyTorch's VAE example:
784-400-20 with ReLU, batch 128, Adam 1e-3, dynamic binarization in both).

Epoch times are interleaved in rounds within one run and their medians printed as one JSON object:
`overhead` = rlgen / compute-only - 1 (the cost of rlgen's data path), `speedup` = DataLoader / rlgen.
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
from core.run import Run
from generative.data import DataConfig
from generative.vae import VAEModelConfig
from generative.vae_task import VAEConfig, VAETask, VAETrainConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _task(device: torch.device, data_root: str | None) -> VAETask:
    config = VAEConfig(
        name="bench", device=str(device), data=DataConfig(root=data_root, binarize="dynamic"),
        model=VAEModelConfig(hidden=[400], latent=20, activation="relu"),
        train=VAETrainConfig(epochs=1000, batch_size=128),
        run=RunConfig(root=tempfile.mkdtemp(prefix="rlgen-bench-")),
    )
    config.optim.betas, config.optim.eps = None, None  # torch's Adam defaults, as the example
    return VAETask(config, Run(Path(config.run.root), config), device)


def _rlgen_epoch(task: VAETask) -> float:
    _sync(task.device)
    start = time.perf_counter()
    for _ in range(task.batches.batches_per_epoch):
        task.train_step()
    _sync(task.device)
    return time.perf_counter() - start


def _compute_only_epoch(task: VAETask, fixed_batch: torch.Tensor) -> float:
    """The trainer's own step with the data path replaced by one fixed batch: pure compute."""
    real_next = task.batches.next
    task.batches.next = lambda: fixed_batch  # type: ignore[method-assign]
    try:
        return _rlgen_epoch(task)
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


def _dataloader_epoch(model: ExampleVAE, optimizer: torch.optim.Optimizer, loader: DataLoader,
                      device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for (grey,) in loader:
        images = torch.bernoulli(grey.to(device))
        logits, mu, logvar = model(images)
        reconstruction = F.binary_cross_entropy_with_logits(logits, images.view(-1, 784), reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        optimizer.zero_grad()
        (reconstruction + kl).backward()
        optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved epochs of each variant")
    parser.add_argument("--data-root", default=os.environ.get("RLGEN_DATA"), help="folder holding mnist/")
    args = parser.parse_args()

    device = resolve_device(args.device)
    task = _task(device, args.data_root)
    fixed_batch = task.batches.next()
    grey = task.data.train.cpu().float().div(255.0)
    loader = DataLoader(TensorDataset(grey), batch_size=128, shuffle=True, drop_last=True)
    example = ExampleVAE().to(device)
    example_optimizer = torch.optim.Adam(example.parameters(), lr=1e-3)
    times: dict[str, list[float]] = {"rlgen": [], "compute_only": [], "dataloader": []}
    _rlgen_epoch(task)  # warm-up of all three
    _compute_only_epoch(task, fixed_batch)
    _dataloader_epoch(example, example_optimizer, loader, device)
    for _ in range(args.rounds):
        times["rlgen"].append(_rlgen_epoch(task))
        times["compute_only"].append(_compute_only_epoch(task, fixed_batch))
        times["dataloader"].append(_dataloader_epoch(example, example_optimizer, loader, device))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "batches_per_epoch": task.batches.batches_per_epoch,
        "rounds": args.rounds,
        "rlgen_epoch_s": round(median["rlgen"], 3),
        "compute_only_epoch_s": round(median["compute_only"], 3),
        "dataloader_epoch_s": round(median["dataloader"], 3),
        "overhead": round(median["rlgen"] / median["compute_only"] - 1, 3),
        "speedup": round(median["dataloader"] / median["rlgen"], 3),
        "epoch_s_rounds": {name: [round(value, 3) for value in values] for name, values in times.items()},
    }))


if __name__ == "__main__":
    main()
