"""Device choice, seeding and the RNG states a checkpoint carries, so a resumed run draws the same numbers."""
from __future__ import annotations

import os
import random
import re
from typing import Any

import numpy as np
import torch

from core.errors import UserError


def resolve_device(name: str) -> torch.device:
    """`auto` picks the GPU when there is one; `cuda:N` must name a GPU that exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise UserError(f"device: {name!r} is not one of auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise UserError(f"device: {name!r} asked for, but torch sees no CUDA GPU (use device=auto or cpu)")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UserError(f"device: {name!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device("cuda", index)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all GPUs too); environments take the seed separately."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Switch torch's deterministic algorithms on or off (cuBLAS needs its workspace setting for it)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Only touch the switch when it changes: switching imports torch's compiler stack (seconds).
    if enabled != torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = not enabled


def set_threads(count: int) -> None:
    """CPU threads for torch's operators; 0 keeps torch's default. Tiny models run fastest on one
    thread: on a busy machine, waking a second thread for every small operator costs more than it saves."""
    if count < 0:
        raise UserError(f"threads must be >= 0, got {count}")
    if count:
        torch.set_num_threads(count)


def flush_denormals() -> None:
    """Treat float values below 1.2e-38 as zero on the CPU. Sampling-based learners (an RBM's tiny weight
    updates, say) fill their tensors with such denormal numbers, and each operation on one costs about a
    hundred normal ones: an RBM step measured 5.5x slower without this. No figure a model reports is that
    small, so nothing else changes."""
    torch.set_flush_denormal(True)


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch and CUDA generator states, as tensors and primitives (weights_only-loadable)."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(
        (numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"], numpy["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
