"""Checkpoint cost: rlgen's atomic save (temp file + fsync + rename) and weights_only load against a plain
torch.save / torch.load of the same state, measured side by side. Prints one JSON object."""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from core.checkpoint import CheckpointManager, load_file


def _median_s(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=256, help="size of the state to save")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    elements = args.megabytes * 2**20 // 4
    state = {"weights": torch.randn(elements), "step": 1, "nested": {"lr": 1e-3}}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        manager = CheckpointManager(root / "checkpoints", keep=2)
        plain_path = root / "plain.pt"
        steps = iter(range(1, 10_000))
        rlgen_save = _median_s(lambda: manager.save(next(steps), state), args.repeats)
        plain_save = _median_s(lambda: torch.save(state, plain_path), args.repeats)
        newest = manager.paths()[-1]
        # load_file maps the file (mmap) and reads tensors on first touch: sum them so both loads read it all.
        rlgen_load = _median_s(lambda: float(load_file(newest)["weights"].sum()), args.repeats)
        plain_load = _median_s(lambda: float(torch.load(plain_path, weights_only=False)["weights"].sum()), args.repeats)
    print(json.dumps({
        "state_mb": args.megabytes,
        "rlgen_save_s": round(rlgen_save, 4),
        "plain_save_s": round(plain_save, 4),
        "save_overhead": round(rlgen_save / plain_save - 1, 3),
        "rlgen_save_mb_s": round(args.megabytes / rlgen_save, 1),
        "rlgen_load_s": round(rlgen_load, 4),
        "plain_load_s": round(plain_load, 4),
        "load_overhead": round(rlgen_load / plain_load - 1, 3),
    }))


if __name__ == "__main__":
    main()
