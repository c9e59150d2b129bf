"""Replay memory as a component: checkpoint round trip, memory accounting and checks, input handling."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import UserError
from core.replay import ReplayMemory, budget
from test_replay_nstep import DEVICES, ToyVectorEnv, run


def _pixel_memory(device: str, prioritized: bool, seed: int = 0) -> ReplayMemory:
    return ReplayMemory(2 * 40, 2, (4, 5, 6), torch.uint8, device, n_step=3, prioritized=prioritized, seed=seed)


def _same(first, second) -> None:
    for name, a, b in zip(first._fields, first, second):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("prioritized", [False, True], ids=["uniform", "prioritized"])
def test_state_dict_round_trip_gives_the_same_samples(tmp_path: Path, device: str, prioritized: bool) -> None:
    memory = _pixel_memory(device, prioritized)
    env = ToyVectorEnv(num_envs=2, pixels=True, seed=1)
    run(memory, env, steps=130, check_every=1000)  # wrapped around
    for _ in range(3):
        batch = memory.sample(8)
        if prioritized:
            memory.update_priorities(batch.indices, torch.randn(8, device=device))
    torch.save(memory.state_dict(), tmp_path / "memory.pt")
    restored = _pixel_memory(device, prioritized, seed=99)
    restored.load_state_dict(torch.load(tmp_path / "memory.pt", weights_only=True, map_location="cpu"))
    assert len(restored) == len(memory)
    for _ in range(5):
        batch = memory.sample(16)
        _same(batch, restored.sample(16))
        if prioritized:
            td = torch.randn(16, device=device)
            memory.update_priorities(batch.indices, td)
            restored.update_priorities(batch.indices, td)
    # A resumed run starts new episodes; both memories then go on identically.
    obs = env.reset()
    for target in (memory, restored):
        target.add_reset(obs)
    for _ in range(10):
        next_obs, reward, terminated, first = env.step(np.ones(2, np.int64))
        for target in (memory, restored):
            target.add(np.ones(2, np.int64), reward, terminated, next_obs, first)
    _same(memory.sample(16), restored.sample(16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_a_gpu_checkpoint_resumed_on_the_cpu_names_the_problem() -> None:
    memory = _pixel_memory("cuda", prioritized=False)
    run(memory, ToyVectorEnv(num_envs=2, pixels=True), steps=20, check_every=1000)
    with pytest.raises(UserError, match="another kind of device"):
        _pixel_memory("cpu", prioritized=False).load_state_dict(memory.state_dict())


def test_state_dict_holds_the_storage_itself_not_copies() -> None:
    memory = _pixel_memory("cpu", prioritized=True)
    run(memory, ToyVectorEnv(num_envs=2, pixels=True, seed=2), steps=25, check_every=1000)  # more than half full
    state = memory.state_dict()
    assert state["storage"]["frames"].data_ptr() == memory.storage.frames.data_ptr()
    assert state["tree"]["leaves"].data_ptr() == memory.tree.leaves.data_ptr()

    def flat(value):
        if isinstance(value, dict):
            for inner in value.values():
                yield from flat(inner)
        elif isinstance(value, list):
            yield from value
        else:
            yield value

    assert all(isinstance(v, (torch.Tensor, int, float, bool, str)) for v in flat(state))


@pytest.mark.parametrize("prioritized", [False, True], ids=["uniform", "prioritized"])
def test_a_partly_filled_memory_saves_only_its_rows_and_resumes_the_same(tmp_path: Path, prioritized: bool) -> None:
    memory = _pixel_memory("cpu", prioritized)
    env = ToyVectorEnv(num_envs=2, pixels=True, seed=3)
    run(memory, env, steps=12, check_every=1000)  # 13 of 40 rows
    state = memory.state_dict()
    assert state["storage"]["frames"].shape[0] == 13 * 2 and state["storage"]["action"].shape[0] == 13
    assert state["storage"]["frames"].data_ptr() != memory.storage.frames.data_ptr()
    torch.save(state, tmp_path / "memory.pt")
    restored = _pixel_memory("cpu", prioritized, seed=99)
    restored.load_state_dict(torch.load(tmp_path / "memory.pt", weights_only=True))
    for name, tensor in memory.storage.state_dict().items():
        assert torch.equal(tensor, restored.storage.state_dict()[name]), name
    obs = env.reset()
    for target in (memory, restored):
        target.add_reset(obs)
    for _ in range(40):  # past the point where the ring wraps
        next_obs, reward, terminated, first = env.step(np.ones(2, np.int64))
        for target in (memory, restored):
            target.add(np.ones(2, np.int64), reward, terminated, next_obs, first)
    _same(memory.sample(16), restored.sample(16))


def test_a_checkpoint_of_another_shape_is_refused() -> None:
    state = _pixel_memory("cpu", prioritized=False).state_dict()
    other = ReplayMemory(2 * 50, 2, (4, 5, 6), torch.uint8, "cpu", n_step=3)
    with pytest.raises(UserError, match=r"capacity=80 \(this run: 100\)"):
        other.load_state_dict(state)


def _allocated_bytes(memory: ReplayMemory) -> int:
    storages = {}
    for owner in (memory, memory.storage, memory.sampler, memory.tree):
        for value in vars(owner).values():
            if isinstance(value, torch.Tensor):
                untyped = value.untyped_storage()
                storages[untyped.data_ptr()] = untyped.nbytes()
    return sum(storages.values())


@pytest.mark.parametrize(
    "obs_shape, dtype, frame_stack",
    [((4, 84, 84), torch.uint8, 4), ((4,), torch.float32, 4), ((1, 3, 3), torch.uint8, 1), ((2, 3, 3), torch.uint8, 2)],
)
def test_bytes_are_counted_before_allocating_exactly(obs_shape: tuple, dtype: torch.dtype, frame_stack: int) -> None:
    memory = ReplayMemory(8 * 100, 8, obs_shape, dtype, "cpu", frame_stack=frame_stack, n_step=3, prioritized=True)
    assert memory.bytes_allocated == _allocated_bytes(memory)
    assert memory.bytes_per_transition == memory.bytes_allocated / 800


def test_a_million_atari_transitions_fit_the_budget() -> None:
    needed = ReplayMemory.bytes_needed(1_000_000, 8, (4, 84, 84), np.uint8)
    assert needed / 1_000_000 <= 7100
    assert needed / 1_000_000 >= 84 * 84  # at least the one frame per transition


def test_a_memory_larger_than_the_device_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "available_bytes", lambda device: 2**30)
    with pytest.raises(UserError, match=r"needs 6\.59 GiB on cpu but only 1\.00 GiB is available"):
        ReplayMemory(1_000_000, 8, (4, 84, 84), torch.uint8, "cpu")


def test_available_bytes_is_known_here() -> None:
    free = budget.available_bytes(torch.device("cpu"))
    assert free is not None and free > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(capacity=10), "too small"),
        (dict(obs_shape=(3, 5, 6)), "frame_stack=4"),
        (dict(stack_padding="repeat"), "unknown stack_padding"),
        (dict(gamma=1.5), "gamma"),
        (dict(n_step=0), "n_step"),
    ],
)
def test_bad_settings_are_user_errors(kwargs: dict, message: str) -> None:
    settings = dict(capacity=2 * 40, num_envs=2, obs_shape=(4, 5, 6), obs_dtype=torch.uint8, device="cpu") | kwargs
    with pytest.raises(UserError, match=message):
        ReplayMemory(**settings)


def test_misuse_is_reported() -> None:
    memory = _pixel_memory("cpu", prioritized=False)
    obs = np.zeros((2, 4, 5, 6), np.uint8)
    with pytest.raises(ValueError, match="add_reset"):
        memory.add(np.zeros(2), np.zeros(2), np.zeros(2, bool), obs, np.zeros(2, bool))
    with pytest.raises(ValueError, match=r"shape \(2, 4, 5, 6\)"):
        memory.add_reset(np.zeros((2, 4, 5, 7), np.uint8))
    memory.add_reset(obs)
    with pytest.raises(UserError, match="at least n_step \\+ 2"):
        memory.sample(4)


def test_numpy_and_tensor_inputs_store_the_same() -> None:
    env = ToyVectorEnv(num_envs=2, pixels=True, seed=2)
    steps = []
    obs = env.reset()
    for _ in range(30):
        action = env.rng.integers(0, 4, 2)
        steps.append((action, *env.step(action)))
    memories = [_pixel_memory("cpu", prioritized=True) for _ in range(2)]
    memories[0].add_reset(obs)
    memories[1].add_reset(torch.from_numpy(obs))
    for action, next_obs, reward, terminated, first in steps:
        memories[0].add(action, reward, terminated, next_obs, first)
        memories[1].add(*(torch.from_numpy(np.asarray(x)) for x in (action, reward, terminated, next_obs, first)))
    for name, tensor in memories[0].storage.state_dict().items():
        assert torch.equal(tensor, memories[1].storage.state_dict()[name]), name
    assert torch.equal(memories[0].tree.leaves, memories[1].tree.leaves)
