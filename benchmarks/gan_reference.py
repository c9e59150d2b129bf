"""The reference for the GAN results: a plain DCGAN training loop in the usual PyTorch-example style (a
DataLoader over a TensorDataset, sigmoid outputs with BCELoss, explicit zero_grad / backward / step), with
gan_mnist.yaml's networks and optimizer, trained for a given number of epochs and then scored exactly as the
`gan` task scores its samples: 10,000 samples from the generator in eval mode, the MNIST judge's Fréchet
distance against the test digits, mode coverage and inception-style score. Prints one JSON object.

    python benchmarks/gan_reference.py --epochs 5 --threads 2 --judge runs/judges/mnist_cnn.pt
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from core.device import resolve_device
from generative.data import DataConfig, load_arrays
from generative.metrics.fid import feature_statistics, judge_outputs, sample_quality
from generative.mnist_classifier import ensure_judge


class Generator(nn.Module):
    def __init__(self, nz: int, ngf: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 7, 1, 0, bias=False),  # 7x7
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),  # 14x14
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, 1, 4, 2, 1),  # 28x28
            nn.Tanh(),
        )

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.main(noise)


class Discriminator(nn.Module):
    def __init__(self, ndf: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(1, ndf, 4, 2, 1),  # 14x14
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),  # 7x7
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, 7, 1, 0),
            nn.Sigmoid(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.main(images).view(-1)


def weights_init(module: nn.Module) -> None:
    """DCGAN's N(0, 0.02) conv weights; batch-norm scales N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def example_update(net_g: Generator, net_d: Discriminator, optimizer_g: optim.Optimizer, optimizer_d: optim.Optimizer,
                   criterion: nn.Module, real: torch.Tensor, nz: int) -> None:
    """One discriminator and one generator update, as PyTorch's DCGAN example makes them."""
    batch = real.shape[0]
    # (1) D: maximize log D(x) + log(1 - D(G(z)))
    net_d.zero_grad()
    label = torch.full((batch,), 1.0, device=real.device)
    error_real = criterion(net_d(real), label)
    error_real.backward()
    fake = net_g(torch.randn(batch, nz, 1, 1, device=real.device))
    label.fill_(0.0)
    error_fake = criterion(net_d(fake.detach()), label)
    error_fake.backward()
    optimizer_d.step()
    # (2) G: maximize log D(G(z))
    net_g.zero_grad()
    label.fill_(1.0)
    error_g = criterion(net_d(fake), label)
    error_g.backward()
    optimizer_g.step()


def train(args: argparse.Namespace, device: torch.device) -> tuple[Generator, int, float]:
    """The example-style loop; returns the generator, the updates made and the training time in seconds."""
    train_images = load_arrays(DataConfig(root=args.data_root))[0]
    dataset = TensorDataset(torch.from_numpy(train_images.copy()).unsqueeze(1).float().div(255).mul(2).sub(1))
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers)
    net_g, net_d = Generator(args.nz, args.width).to(device), Discriminator(args.width).to(device)
    net_g.apply(weights_init)
    net_d.apply(weights_init)
    criterion = nn.BCELoss()
    optimizer_d = optim.Adam(net_d.parameters(), lr=args.lr, betas=(0.5, 0.999))
    optimizer_g = optim.Adam(net_g.parameters(), lr=args.lr, betas=(0.5, 0.999))
    steps, start = 0, time.perf_counter()
    for _ in range(args.epochs):
        for (real,) in loader:
            example_update(net_g, net_d, optimizer_g, optimizer_d, criterion, real.to(device), args.nz)
            steps += 1
    return net_g, steps, time.perf_counter() - start


@torch.no_grad()
def score(net_g: Generator, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """The gan task's final evaluation: `args.samples` samples against the judge's test-digit statistics."""
    judge = ensure_judge(Path(args.judge), args.data_root, device, args.threads)
    test_images = torch.from_numpy(load_arrays(DataConfig(root=args.data_root))[2].copy()).unsqueeze(1)
    reference = feature_statistics(judge_outputs(judge, test_images.to(device).float().div(255)).features)
    net_g.eval()
    generator = torch.Generator(device=device).manual_seed(args.seed)
    samples = torch.cat([net_g(torch.randn(min(500, args.samples - start), args.nz, 1, 1, device=device,
                                           generator=generator)) for start in range(0, args.samples, 500)])
    quality = sample_quality(judge_outputs(judge, samples.add(1).div(2)), reference)
    return {f"eval/{name}": value for name, value in quality.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="passes over the 60,000 training digits")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--nz", type=int, default=100, help="latent dimensions")
    parser.add_argument("--width", type=int, default=64, help="ndf; the generator has 4x and 2x this (ngf = ndf)")
    parser.add_argument("--samples", type=int, default=10000, help="generated images scored")
    parser.add_argument("--judge", default="runs/judges/mnist_cnn.pt", help="MNIST judge file; trained when absent")
    parser.add_argument("--data-root", default=None, help="data root (default: $RLGEN_DATA, else ~/.cache/rlgen/data)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch; 0 = torch's default")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    net_g, steps, seconds = train(args, device)
    result = {"epochs": args.epochs, "generator_updates": steps, "train_seconds": round(seconds, 1),
              "updates_per_second": round(steps / max(seconds, 1e-9), 3), "device": str(device),
              "threads": torch.get_num_threads(), **score(net_g, args, device)}
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
