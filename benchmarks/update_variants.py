"""One Nature-DQN update (batch 32, Adam, rlgen's agent) under each way of computing it: float32 in the usual
layout, channels-last, bfloat16 autocast, both, and `compile: true` (torch.compile of the networks, float32),
and the float32 update of drq_breakout_100k.yaml's network (Dopamine's: SAME padding, linear dueling streams)
beside its network before (VALID, a hidden layer in each dueling stream), and that network's update as the yaml
runs it (`fp32_drq_recipe`: the target synced after every update, so one forward pass of next_obs serves Double DQN),
also in bfloat16 (`bf16_drq_recipe`, with and without channels-last) for the issue's 60-minute DrQ target.
The variants alternate in rounds and each is timed relative to float32 within its round; the medians are
printed as one JSON object, with the CPU's bfloat16 support and torch.compile's first-call (compile) time.

    python benchmarks/update_variants.py --rounds 6 --repeats 10
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

import torch

from agents.dqn import Batch, DQNAgent, DQNAgentConfig
from core.device import resolve_device
from core.optim import OptimConfig
from core.precision import Precision, cpu_flags, native_bf16

# drq_breakout_100k.yaml's network and rule (Dopamine's): SAME convolutions, linear dueling streams, Double DQN;
# and the same rule on the network its seeds used before session 11 (VALID, 512 hidden units per dueling stream).
DRQ_NETWORK = {"padding": "same", "dueling": True, "dueling_hidden": 0, "init": "xavier_uniform", "double": True}
DRQ_NETWORK_BEFORE = {"dueling": True, "double": True}
DRQ_RECIPE = {**DRQ_NETWORK, "target_update_every": 1}
VARIANTS = {  # name -> (precision, channels-last, compiled, agent settings beside the Nature DQN's)
    "fp32": ("fp32", False, False, {}),
    "fp32_channels_last": ("fp32", True, False, {}),
    "bf16": ("bf16", False, False, {}),
    "bf16_channels_last": ("bf16", True, False, {}),
    "fp32_compiled": ("fp32", False, True, {}),
    "fp32_channels_last_compiled": ("fp32", True, True, {}),
    "fp32_drq_network": ("fp32", False, False, DRQ_NETWORK),
    "fp32_drq_network_before": ("fp32", False, False, DRQ_NETWORK_BEFORE),
    "fp32_drq_recipe": ("fp32", False, False, DRQ_RECIPE),
    "bf16_drq_recipe": ("bf16", False, False, DRQ_RECIPE),
    "bf16_drq_recipe_channels_last": ("bf16", True, False, DRQ_RECIPE),
}


def _batch(device: torch.device, size: int = 32) -> Batch:
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, size, 4, 84, 84), dtype=torch.uint8, generator=generator).to(device)
    return Batch(frames[0], torch.randint(0, 4, (size,), generator=generator).to(device),
                 torch.randn(size, generator=generator).to(device), frames[1], torch.full((size,), 0.99, device=device),
                 torch.ones(size, device=device))


def _update(name: str, device: torch.device, batch: Batch) -> tuple[Callable[[], None], float]:
    """The variant's update as a call, and the seconds its first call took (compilation for compiled ones)."""
    dtype, channels_last, compiled, settings = VARIANTS[name]
    precision = Precision(dtype, device.type, channels_last, compile_networks=compiled)
    torch.manual_seed(0)
    agent = DQNAgent(DQNAgentConfig(loss="mse", **settings), OptimConfig(name="adam", lr=1e-4), (4, 84, 84), 4,
                     10**6, device, seed=0, precision=precision)

    def update() -> None:
        with precision.autocast():
            agent.update(batch)
    start = time.perf_counter()
    update()
    return update, time.perf_counter() - start


def _ms(update: Callable[[], None], repeats: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        update()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=10, help="updates per variant and round")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(VARIANTS), help="variants to leave out")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    batch = _batch(device)
    names = [name for name in VARIANTS if name not in args.skip]
    updates, first_call_s = {}, {}
    for name in names:
        updates[name], first_call_s[name] = _update(name, device, batch)
        updates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(args.rounds):
        order = names[index % len(names):] + names[:index % len(names)]  # rotate who goes first
        for name in order:
            times[name].append(_ms(updates[name], args.repeats, device))
    ratios = {name: statistics.median(t / f for t, f in zip(times[name], times["fp32"])) for name in names}
    flags = sorted(flag for flag in cpu_flags() if "bf16" in flag or flag in ("avx2", "avx512f", "amx_tile"))
    print(json.dumps({
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_flags": flags, "native_bf16": native_bf16(device), "torch_threads": torch.get_num_threads(),
        "rounds": args.rounds, "repeats": args.repeats,
        "update_ms": {name: round(statistics.median(values), 2) for name, values in times.items()},
        "to_fp32": {name: round(value, 3) for name, value in ratios.items()},
        "first_call_s": {name: round(value, 2) for name, value in first_call_s.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
