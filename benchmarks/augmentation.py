"""What DrQ's augmentation costs next to the update it feeds: ms to augment one batch of 32 uint8 frame stacks
(shift, shift_intensity) and ms of one DrQ(epsilon) update (dueling, double, Adam, rlgen's agent) without
augmentation, timed in alternating rounds; the medians and their ratio are printed as one JSON object.
The update with augmentation is timed as well, so the difference shows what it adds inside the update.

    python benchmarks/augmentation.py --rounds 6 --repeats 20 --threads 1
"""
from __future__ import annotations

import argparse
import json
import statistics
from typing import Callable

import torch
from update_variants import _batch, _ms  # the same random batch and timing as the update's benchmark

from agents.augmentation import RandomShift
from agents.dqn import Batch, DQNAgent, DQNAgentConfig
from core.device import resolve_device
from core.optim import OptimConfig
from core.precision import Precision, resolve_channels_last


def _update(augmentation: str, device: torch.device, batch: Batch, precision: Precision) -> Callable[[], None]:
    torch.manual_seed(0)
    config = DQNAgentConfig(dueling=True, double=True, n_step=10, target_update_every=1, augmentation=augmentation)
    agent = DQNAgent(config, OptimConfig(name="adam", lr=1e-4, eps=1.5e-4), (4, 84, 84), 4, 10**6, device, seed=0,
                     precision=precision)

    def update() -> None:
        with precision.autocast():
            agent.update(batch)
    return update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=20, help="calls per measurement and round")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = Precision(args.precision, device.type, resolve_channels_last(None, device, args.precision))
    batch = _batch(device)
    calls: dict[str, Callable[[], object]] = {
        "shift": lambda shift=RandomShift(device, seed=0): shift(batch.obs),
        "shift_intensity": lambda shift=RandomShift(device, seed=0, intensity=True): shift(batch.obs),
        "update": _update("none", device, batch, precision),
        "update_shift_intensity": _update("shift_intensity", device, batch, precision),
    }
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for index in range(args.rounds):
        for name in names[index % len(names):] + names[:index % len(names)]:  # rotate who goes first
            times[name].append(_ms(calls[name], args.repeats, device))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": args.precision, "torch_threads": torch.get_num_threads(),
        "rounds": args.rounds, "repeats": args.repeats, "batch": 32,
        "ms": {name: round(value, 3) for name, value in median.items()},
        # Two augmentations (obs and next_obs) per update.
        "two_augmentations_to_update": {
            name: round(2 * median[name] / median["update"], 4) for name in ("shift", "shift_intensity")
        },
        "update_with_augmentation_to_update": round(median["update_shift_intensity"] / median["update"], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
