"""DQN speed on Breakout with learning on: rlgen's update (at the precision `auto` picks here, and in bf16)
against the same update written as bare float32 PyTorch, the compute-bound limit it implies, and the whole
loop's env steps per second with 1 and 8 envs, beside the same loop written as a bare prototype around the
bare update (its ratio to the bare update's limit).

All figures come from one run, in interleaved rounds (the ratios are taken within a round, then the median
over rounds), and are printed as one JSON object.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ale_py.vector_env import AtariVectorEnv

import agents  # noqa: F401  (registers the dqn task)
from agents.dqn import Batch
from agents.loop import DQNConfig, DQNTask
from core.config import RunConfig
from core.device import resolve_device
from core.nets import NatureTorso
from core.optim import OptimConfig
from core.precision import native_bf16
from core.run import Run
from envs import EnvConfig
from envs.atari import rom_id, vector_env_settings


def _config(num_envs: int, capacity: int, learning_starts: int, device: str, env_threads: int = 0,
            precision: str = "auto") -> DQNConfig:
    config = DQNConfig(
        name="bench", device=device, precision=precision,
        env=EnvConfig(kind="atari", id="breakout", num_envs=num_envs, num_threads=env_threads),
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


class BareLoop:
    """The whole loop as a bare prototype writes it, around `BareUpdate`: ale-py's vector env with rlgen's
    settings, an epsilon-greedy forward of the bare network, the step handed to the emulator threads while
    the updates owed (one per 4 env steps) run, and the newest frames copied into the bare frames tensor."""

    def __init__(self, bare: BareUpdate, num_envs: int, env_threads: int) -> None:
        config = EnvConfig(kind="atari", id="breakout", num_envs=num_envs, num_threads=env_threads)
        self.env = AtariVectorEnv(rom_id(config.id), num_envs, **vector_env_settings(config, evaluation=False))
        self.obs = self.env.reset(seed=np.arange(num_envs))[0]
        self.bare, self.num_envs, self.position, self.credit = bare, num_envs, 4, 0.0

    def _step(self) -> None:
        bare, count = self.bare, self.num_envs
        with torch.no_grad():
            greedy = bare.online(torch.from_numpy(self.obs).to(bare.frames.device)).argmax(dim=1)
        actions = torch.where(torch.rand(count, device=greedy.device) < 0.05,
                              torch.randint(4, (count,), device=greedy.device), greedy)
        self.env.send(actions.cpu().numpy())
        self.credit += count / 4
        while self.credit >= 1:
            self.credit -= 1
            bare.step()
        obs, reward, terminated, _, _ = self.env.recv()
        rows = (self.position + torch.arange(count)) % (bare.capacity - 1)
        bare.frames[rows] = torch.from_numpy(obs[:, -1]).to(bare.frames.device)
        bare.actions[rows], bare.rewards[rows] = actions, torch.from_numpy(reward).to(bare.rewards)
        bare.dones[rows] = torch.from_numpy(terminated).to(bare.dones.device)
        self.position, self.obs = (self.position + count) % (bare.capacity - 1), obs

    def sps(self, seconds: float) -> float:
        """Env steps per second over about `seconds`."""
        device = self.bare.frames.device
        _sync(device)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            self._step()
            steps += self.num_envs
        _sync(device)
        return steps / (time.perf_counter() - start)

    def close(self) -> None:
        self.env.close()


def _rlgen_update(task: DQNTask) -> None:
    sample = task.memory.sample(32)
    with task.precision.autocast():  # as the driver runs every training step
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


class LoopTimer:
    """A task past learning_starts whose whole step (act, env, store, learn) is timed in slices."""

    def __init__(self, num_envs: int, capacity: int, device: str, env_threads: int) -> None:
        self.task = _task(_config(num_envs, capacity, learning_starts=2_000, device=device, env_threads=env_threads))
        while self.task.step < 2_000 + 64:
            with self.task.precision.autocast():
                self.task.train_step()

    def sps(self, seconds: float) -> float:
        """Env steps per second over about `seconds` of training."""
        task = self.task
        _sync(task.device)
        start_step, start = task.step, time.perf_counter()
        while time.perf_counter() - start < seconds:
            with task.precision.autocast():
                task.train_step()
        _sync(task.device)
        return (task.step - start_step) / (time.perf_counter() - start)

    def close(self) -> None:
        self.task.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--capacity", type=int, default=100_000, help="replay capacity (transitions) for the update")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds of update and loop timing")
    parser.add_argument("--repeats", type=int, default=10, help="updates per round and implementation")
    parser.add_argument("--loop-seconds", type=float, default=8.0, help="seconds of loop timing per round and env count")
    parser.add_argument("--env-threads", type=int, default=0, help="ale-py emulator threads (env.num_threads)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    task = _task(_config(8, args.capacity, learning_starts=0, device=str(device)))
    _fill(task, args.capacity)
    bf16_task = _task(_config(8, args.capacity, learning_starts=0, device=str(device), precision="bf16"))
    _fill(bf16_task, args.capacity)
    bare = BareUpdate(args.capacity, device)
    loops = {envs: LoopTimer(envs, 50_000, str(device), args.env_threads) for envs in (1, 8)}
    bare_loop = BareLoop(bare, 8, args.env_threads)
    for _ in range(3):
        _rlgen_update(task)
        _rlgen_update(bf16_task)
        bare.step()
    # Each round times every figure back to back, so a ratio compares figures taken under the same load
    # of this shared machine; the medians over rounds are reported.
    rounds: dict[str, list[float]] = {"update_ms": [], "bare_update_ms": [], "bf16_update_ms": [],
                                      "bf16_to_bare_update": [], "loop_1": [], "loop_8": [],
                                      "overhead": [], "loop_to_limit": [], "bare_loop": [], "bare_loop_to_limit": [],
                                      "loop_to_bare_loop": []}
    for _ in range(args.rounds):
        update_ms = _time_ms(lambda: _rlgen_update(task), device, args.repeats)
        bare_ms = _time_ms(bare.step, device, args.repeats)
        bf16_ms = _time_ms(lambda: _rlgen_update(bf16_task), device, args.repeats)
        loop_8 = loops[8].sps(args.loop_seconds)
        loop_1 = loops[1].sps(args.loop_seconds)
        update_again_ms = _time_ms(lambda: _rlgen_update(task), device, args.repeats)
        bare_loop_sps = bare_loop.sps(args.loop_seconds)
        bare_again_ms = _time_ms(bare.step, device, args.repeats)
        limit_sps = 4 / ((update_ms + update_again_ms) / 2 / 1000)
        bare_limit_sps = 4 / ((bare_ms + bare_again_ms) / 2 / 1000)
        for key, value in (("update_ms", update_ms), ("bare_update_ms", bare_ms), ("bf16_update_ms", bf16_ms),
                           ("bf16_to_bare_update", bf16_ms / ((bare_ms + bare_again_ms) / 2)), ("loop_1", loop_1),
                           ("loop_8", loop_8), ("overhead", update_ms / bare_ms - 1),
                           ("loop_to_limit", loop_8 / limit_sps), ("bare_loop", bare_loop_sps),
                           ("bare_loop_to_limit", bare_loop_sps / bare_limit_sps),
                           ("loop_to_bare_loop", loop_8 / bare_loop_sps)):
            rounds[key].append(value)
    task.close()
    bf16_task.close()
    for loop in (*loops.values(), bare_loop):
        loop.close()
    median = {key: float(np.median(values)) for key, values in rounds.items()}
    print(json.dumps({
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "env_threads": args.env_threads,
        "replay_capacity": args.capacity,
        "rounds": args.rounds,
        "precision": task.precision.name,
        "channels_last": task.precision.channels_last,
        "native_bf16": native_bf16(device),
        "update_ms": round(median["update_ms"], 3),
        "bare_update_ms": round(median["bare_update_ms"], 3),
        "bf16_update_ms": round(median["bf16_update_ms"], 3),
        "bf16_to_bare_update": round(median["bf16_to_bare_update"], 3),
        "bf16_to_bare_update_rounds": [round(value, 3) for value in rounds["bf16_to_bare_update"]],
        "update_overhead": round(median["overhead"], 3),
        "limit_sps": round(4 / (median["update_ms"] / 1000), 1),
        "loop_sps": round(median["loop_8"], 1),
        "loop_to_limit": round(median["loop_to_limit"], 3),
        "loop_sps_1env": round(median["loop_1"], 1),
        "loop_sps_8env": round(median["loop_8"], 1),
        "update_overhead_rounds": [round(value, 3) for value in rounds["overhead"]],
        "loop_to_limit_rounds": [round(value, 3) for value in rounds["loop_to_limit"]],
        "bare_loop_sps": round(median["bare_loop"], 1),
        "bare_loop_to_limit": round(median["bare_loop_to_limit"], 3),
        "bare_loop_to_limit_rounds": [round(value, 3) for value in rounds["bare_loop_to_limit"]],
        "loop_to_bare_loop": round(median["loop_to_bare_loop"], 3),
        "loop_to_bare_loop_rounds": [round(value, 3) for value in rounds["loop_to_bare_loop"]],
    }))


if __name__ == "__main__":
    main()
