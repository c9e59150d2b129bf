"""DQN speed on Breakout with learning on: rlgen's update against the same update written as bare PyTorch,
the compute-bound limit it implies, and the whole loop's env steps per second with 1 and 8 envs.

All figures come from one run, interleaved where they are compared, and printed as one JSON object.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import agents  # noqa: F401  (registers the dqn task)
from agents.dqn import Batch
from agents.loop import DQNConfig, DQNTask
from core.config import RunConfig
from core.device import resolve_device
from core.nets import NatureTorso
from core.optim import OptimConfig
from core.run import Run
from envs import EnvConfig


def _config(num_envs: int, capacity: int, learning_starts: int, device: str) -> DQNConfig:
    config = DQNConfig(
        name="bench", device=device,
        env=EnvConfig(kind="atari", id="breakout", num_envs=num_envs),
        optim=OptimConfig(name="adam", lr=1e-4),
        run=RunConfig(root=tempfile.mkdtemp(prefix="rlgen-bench-")),
    )
    config.replay.capacity = capacity
    config.train.learning_starts = learning_starts
    config.train.total_steps = 10**9
    config.agent.loss = "mse"
    return config


def _task(config: DQNConfig) -> DQNTask:
    run = Run(Path(config.run.root), config)
    return DQNTask(config, run, resolve_device(config.device))


def _fill(task: DQNTask, steps: int) -> None:
    """Fill the memory with random Breakout frames, fast: the content does not change the cost."""
    memory, num_envs = task.memory, task.num_envs
    shape = (num_envs, *task.env.obs_shape)
    memory.add_reset(np.random.randint(0, 256, shape, dtype=np.uint8))
    for _ in range(steps // num_envs):
        memory.add(np.random.randint(0, 4, num_envs), np.random.rand(num_envs).astype(np.float32),
                   np.random.rand(num_envs) < 0.01, np.random.randint(0, 256, shape, dtype=np.uint8),
                   np.zeros(num_envs, dtype=bool))


class BareUpdate:
    """The same learning step as plain PyTorch: uniform indices into one frames tensor, stacks by one gather."""

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.frames = torch.randint(0, 256, (capacity, 84, 84), dtype=torch.uint8, device=device)
        self.actions = torch.randint(0, 4, (capacity,), device=device)
        self.rewards = torch.rand(capacity, device=device)
        self.dones = torch.rand(capacity, device=device) < 0.01
        self.online = torch.nn.Sequential(NatureTorso(), torch.nn.Linear(512, 4)).to(device)
        self.target = torch.nn.Sequential(NatureTorso(), torch.nn.Linear(512, 4)).to(device)
        self.target.load_state_dict(self.online.state_dict())
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=1e-4)
        self.offsets = torch.arange(-3, 1, device=device)
        self.capacity = capacity

    def step(self, batch_size: int = 32) -> None:
        index = torch.randint(4, self.capacity - 1, (batch_size,), device=self.frames.device)
        obs = self.frames[index[:, None] + self.offsets]
        next_obs = self.frames[index[:, None] + self.offsets + 1]
        q = self.online(obs).gather(1, self.actions[index].unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            target = self.rewards[index] + 0.99 * (~self.dones[index]) * self.target(next_obs).max(dim=1).values
        loss = F.mse_loss(q, target)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


def _rlgen_update(task: DQNTask) -> None:
    sample = task.memory.sample(32)
    task.agent.update(Batch(sample.obs, sample.action, sample.reward, sample.next_obs, sample.discount,
                            sample.weights))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(function, device: torch.device, repeats: int) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    _sync(device)
    return 1000 * (time.perf_counter() - start) / repeats


def _loop_sps(num_envs: int, capacity: int, seconds: float, device: str) -> float:
    """The task's whole step (act, env, store, learn) past learning_starts, in env steps per second."""
    task = _task(_config(num_envs, capacity, learning_starts=2_000, device=device))
    try:
        while task.step < 2_000 + 64:
            task.train_step()
        _sync(task.device)
        start_step, start = task.step, time.perf_counter()
        while time.perf_counter() - start < seconds:
            task.train_step()
        _sync(task.device)
        return (task.step - start_step) / (time.perf_counter() - start)
    finally:
        task.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--capacity", type=int, default=100_000, help="replay capacity (transitions) for the update")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds of update timing")
    parser.add_argument("--repeats", type=int, default=10, help="updates per round")
    parser.add_argument("--loop-seconds", type=float, default=30.0, help="seconds of loop timing per env count")
    args = parser.parse_args()

    device = resolve_device(args.device)
    task = _task(_config(8, args.capacity, learning_starts=0, device=str(device)))
    _fill(task, args.capacity)
    bare = BareUpdate(args.capacity, device)
    for _ in range(3):
        _rlgen_update(task)
        bare.step()
    rlgen_ms, bare_ms = [], []
    for _ in range(args.rounds):
        rlgen_ms.append(_time_ms(lambda: _rlgen_update(task), device, args.repeats))
        bare_ms.append(_time_ms(bare.step, device, args.repeats))
    task.close()
    del task, bare
    # The lowest round of each: rounds slowed by other jobs on a shared machine drop out.
    update_ms, bare_update_ms = min(rlgen_ms), min(bare_ms)
    limit_sps = 4 / (update_ms / 1000)
    loop_1 = _loop_sps(1, 50_000, args.loop_seconds, str(device))
    loop_8 = _loop_sps(8, 50_000, args.loop_seconds, str(device))
    print(json.dumps({
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "replay_capacity": args.capacity,
        "update_ms": round(update_ms, 3),
        "bare_update_ms": round(bare_update_ms, 3),
        "update_overhead": round(update_ms / bare_update_ms - 1, 3),
        "limit_sps": round(limit_sps, 1),
        "loop_sps": round(loop_8, 1),
        "loop_to_limit": round(loop_8 / limit_sps, 3),
        "loop_sps_1env": round(loop_1, 1),
        "loop_sps_8env": round(loop_8, 1),
    }))


if __name__ == "__main__":
    main()
