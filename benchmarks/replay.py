"""Replay memory cost: bytes per transition, add throughput, and sample latency (batch 32, uniform and
prioritized, n = 1 and 3) at a full 1M-transition Atari memory and at a full 100k one, next to a naive
buffer that stores whole stacks for obs and next_obs (sampled in the same run). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from typing import Callable

import numpy as np
import torch

from core.replay import ReplayMemory

OBS_SHAPE = (4, 84, 84)
NUM_ENVS = 8
BATCH = 32
ROUNDS = 5


class NaiveStackedBuffer:
    """The baseline: whole uint8 stacks for obs and next_obs per transition, sampled with one index."""

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.obs = torch.zeros((capacity, *OBS_SHAPE), dtype=torch.uint8, device=device)
        self.next_obs = torch.zeros_like(self.obs)
        self.action = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.reward = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.done = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.capacity = capacity
        self.generator = torch.Generator(device=device).manual_seed(0)

    def fill(self, chunk: int = 4096) -> None:
        for start in range(0, self.capacity, chunk):
            end = min(start + chunk, self.capacity)
            self.obs[start:end].random_(0, 256, generator=self.generator)
            self.next_obs[start:end].random_(0, 256, generator=self.generator)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """As a plain PyTorch buffer is written: tensor indexing."""
        index = torch.randint(self.capacity, (batch_size,), device=self.obs.device, generator=self.generator)
        return self.obs[index], self.action[index], self.reward[index], self.next_obs[index], self.done[index]

    def sample_index_select(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """The same with index_select, which copies whole rows (much faster than indexing on the CPU)."""
        index = torch.randint(self.capacity, (batch_size,), device=self.obs.device, generator=self.generator)
        return tuple(t.index_select(0, index) for t in self.tensors())

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Everything the buffer stores: obs, action, reward, next_obs, done."""
        return self.obs, self.action, self.reward, self.next_obs, self.done


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _latency_ms(functions: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict[str, float]:
    """Per function, the lowest over ROUNDS interleaved rounds of the median of `repeats` timed calls.

    Interleaving puts the functions compared under the same load; the lowest round median drops the
    rounds that a neighbour's process slowed down on a shared machine.
    """
    for function in functions.values():
        for _ in range(10):
            function()
    medians: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(ROUNDS):
        for name, function in functions.items():
            times = []
            for _ in range(repeats):
                _synchronize(device)
                start = time.perf_counter()
                function()
                _synchronize(device)
                times.append(time.perf_counter() - start)
            medians[name].append(statistics.median(times))
    return {name: round(min(values) * 1e3, 4) for name, values in medians.items()}


def _episode_flags(rng: np.random.Generator, steps: int) -> tuple[np.ndarray, np.ndarray]:
    terminated = rng.random((steps, NUM_ENVS)) < 0.01  # a life loss every ~100 steps
    first = rng.random((steps, NUM_ENVS)) < 0.002  # a new game every ~500 steps
    return terminated, first


def _fill(memory: ReplayMemory, steps: int, seed: int) -> None:
    """Add `steps` steps of all envs with random frames and episode ends, from inputs already on the device."""
    rng = np.random.default_rng(seed)
    device = memory.device
    pool = torch.randint(0, 256, (16, NUM_ENVS, *OBS_SHAPE), dtype=torch.uint8, device=device)
    actions = torch.randint(0, 4, (256, NUM_ENVS), device=device)
    rewards = torch.rand((256, NUM_ENVS), device=device)
    terminated, first = (torch.from_numpy(flags).to(device) for flags in _episode_flags(rng, 256))
    memory.add_reset(pool[0])
    for step in range(steps):
        k = step % 256
        memory.add(actions[k], rewards[k], terminated[k], pool[step % 16], first[k])


def _add_env_steps_per_s(memory: ReplayMemory, steps: int) -> float:
    """Environment steps per second that `add` takes in (best of ROUNDS), fed numpy arrays as the env returns them."""
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, size=(16, NUM_ENVS, *OBS_SHAPE), dtype=np.uint8)
    actions = rng.integers(0, 4, size=(steps, NUM_ENVS))
    rewards = rng.random((steps, NUM_ENVS), dtype=np.float32)
    terminated, first = _episode_flags(rng, steps)
    best = 0.0
    for _ in range(ROUNDS):
        _synchronize(memory.device)
        start = time.perf_counter()
        for step in range(steps):
            memory.add(actions[step], rewards[step], terminated[step], pool[step % 16], first[step])
        _synchronize(memory.device)
        best = max(best, steps * NUM_ENVS / (time.perf_counter() - start))
    return best


def _measure(
    capacity: int, device: torch.device, repeats: int, naive: NaiveStackedBuffer | None = None
) -> dict[str, float]:
    """Figures of full memories of `capacity` transitions, uniform and prioritized, n = 1 and 3; the naive
    buffer, if given, is timed in the same rounds as the uniform one-step memory."""
    td = torch.randn(BATCH, device=device)
    figures: dict[str, float] = {}
    for prioritized in (False, True):
        for n_step in (1, 3):
            memory = ReplayMemory(
                capacity, NUM_ENVS, OBS_SHAPE, torch.uint8, device, n_step=n_step, prioritized=prioritized, seed=1
            )
            _fill(memory, capacity // NUM_ENVS + 16, seed=n_step)
            if prioritized:
                def sample_update(memory: ReplayMemory = memory) -> None:
                    batch = memory.sample(BATCH)
                    memory.update_priorities(batch.indices, td)

                functions = {f"prioritized_sample_update_n{n_step}_ms": sample_update}
            else:
                functions = {f"uniform_sample_n{n_step}_ms": lambda memory=memory: memory.sample(BATCH)}
                if naive is not None and n_step == 1:
                    functions["naive_uniform_sample_ms"] = lambda: naive.sample(BATCH)
                    functions["naive_index_select_sample_ms"] = lambda: naive.sample_index_select(BATCH)
            figures.update(_latency_ms(functions, device, repeats))
            if not prioritized and n_step == 1:
                figures["bytes_per_transition"] = round(memory.bytes_per_transition, 1)
                figures["add_env_steps_per_s"] = round(_add_env_steps_per_s(memory, 2000))
            del memory, functions
            gc.collect()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--quick", action="store_true", help="small memories (100k and 10k) for a fast check")
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per round (5 rounds per figure)")
    args = parser.parse_args()
    device = torch.device(args.device)
    large, small = (100_000, 10_000) if args.quick else (1_000_000, 100_000)
    load_before = os.getloadavg()[0]
    large_figures = _measure(large, device, args.repeats)
    naive = NaiveStackedBuffer(small, device)
    naive.fill()
    naive_bytes = sum(t.numel() * t.element_size() for t in naive.tensors())
    small_figures = _measure(small, device, args.repeats, naive)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        # The machine's 1-minute load average before and after: other processes share the CPU here.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "large_capacity": large,
        "small_capacity": small,
        "bytes_per_transition": large_figures["bytes_per_transition"],
        "naive_bytes_per_transition": round(naive_bytes / small, 1),
        "add_env_steps_per_s": large_figures["add_env_steps_per_s"],
        "uniform_sample_ms": large_figures["uniform_sample_n1_ms"],
        "uniform_sample_n3_ms": large_figures["uniform_sample_n3_ms"],
        "prioritized_sample_update_ms": large_figures["prioritized_sample_update_n1_ms"],
        "prioritized_sample_update_n3_ms": large_figures["prioritized_sample_update_n3_ms"],
        "small_uniform_sample_ms": small_figures["uniform_sample_n1_ms"],
        "small_uniform_sample_n3_ms": small_figures["uniform_sample_n3_ms"],
        "small_prioritized_sample_update_ms": small_figures["prioritized_sample_update_n1_ms"],
        "small_prioritized_sample_update_n3_ms": small_figures["prioritized_sample_update_n3_ms"],
        "naive_uniform_sample_ms": small_figures["naive_uniform_sample_ms"],
        "naive_index_select_sample_ms": small_figures["naive_index_select_sample_ms"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
