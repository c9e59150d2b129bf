"""Time per DCGAN update: the `gan` task as gan_mnist.yaml configures it (one generator pass per update), the
same with `train.reuse_latents=false` (a second generator pass for fresh latents), and the reference loop of
gan_reference.py (PyTorch's example update over a DataLoader), and the first in bfloat16 (`precision=bf16`). They
alternate in rounds on one machine, so the ratios are side by side. Prints one JSON object: median milliseconds per update and the ratios.

    python benchmarks/gan_step.py --threads 1 --rounds 4 --updates 30
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from core.config import load_config
from core.device import resolve_device
from core.run import Run
from core.task import schema_for
from gan_reference import Discriminator, Generator, example_update, weights_init
from generative.data import DataConfig, load_arrays
from generative.gan_task import GANTask

ROOT = Path(__file__).resolve().parents[1]


def _task(args: argparse.Namespace, device: torch.device, reuse: bool, precision: str = "auto") -> GANTask:
    overrides = [f"train.reuse_latents={str(reuse).lower()}", f"eval.classifier={args.judge}", f"precision={precision}",
                 f"run.root={tempfile.mkdtemp(prefix='rlgen-bench-')}", f"device={device}"]
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    config = load_config(ROOT / "experiments" / "gan_mnist.yaml", overrides, schema_for)
    return GANTask(config, Run(Path(config.run.root), config), device)


def _example(args: argparse.Namespace, device: torch.device) -> Callable[[], None]:
    """One update of the example loop per call, over an endless DataLoader of the training digits."""
    images = torch.from_numpy(load_arrays(DataConfig(root=args.data_root))[0].copy()).unsqueeze(1)
    loader = DataLoader(TensorDataset(images.float().div(255).mul(2).sub(1)), batch_size=128, shuffle=True,
                        drop_last=True)
    net_g, net_d = Generator(100, 64).to(device), Discriminator(64).to(device)
    net_g.apply(weights_init)
    net_d.apply(weights_init)
    optimizer_g = optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizer_d = optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    criterion, batches = nn.BCELoss(), iter(())

    def update() -> None:
        nonlocal batches
        real = next(batches, None)
        if real is None:
            batches = iter(loader)
            real = next(batches)
        example_update(net_g, net_d, optimizer_g, optimizer_d, criterion, real[0].to(device), 100)
    return update


def _training_step(task: GANTask) -> Callable[[], None]:
    """The task's update inside its precision's autocast, as the driver runs it."""
    def update() -> None:
        with task.precision.autocast():
            task.train_step()
    return update


def _seconds_per_update(update: Callable[[], object], count: int, device: torch.device) -> float:
    update()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(count):
        update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds; each times every contender once")
    parser.add_argument("--updates", type=int, default=30, help="updates timed per contender and round")
    parser.add_argument("--judge", default="runs/judges/mnist_cnn.pt", help="MNIST judge file; trained when absent")
    parser.add_argument("--data-root", default=None, help="data root (default: $RLGEN_DATA, else ~/.cache/rlgen/data)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    one_pass, two_passes = _task(args, device, True), _task(args, device, False)
    bf16 = _task(args, device, True, precision="bf16")
    contenders = {"rlgen_one_pass": _training_step(one_pass), "rlgen_two_passes": _training_step(two_passes),
                  "example_loop": _example(args, device), "rlgen_one_pass_bf16": _training_step(bf16)}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, update in contenders.items():
            times[name].append(_seconds_per_update(update, args.updates, device))
    ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    result = {"device": str(device), "threads": torch.get_num_threads(), "rounds": args.rounds,
              "updates_per_round": args.updates, **{f"{name}_ms": round(value, 2) for name, value in ms.items()},
              "one_pass_over_two_passes": round(ms["rlgen_one_pass"] / ms["rlgen_two_passes"], 3),
              "one_pass_over_example": round(ms["rlgen_one_pass"] / ms["example_loop"], 3),
              "precision": one_pass.precision.name, "channels_last": one_pass.precision.channels_last,
              "bf16_over_fp32": round(statistics.median(  # within each round, then the median
                  bf / fp for fp, bf in zip(times["rlgen_one_pass"], times["rlgen_one_pass_bf16"])), 3)}
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
