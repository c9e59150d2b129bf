"""PQN against the DQN loop on Breakout, learning on: env steps per second of whole training steps (act,
env, learn) as the driver runs them, in interleaved rounds on this machine, the ratio taken within each round.

PQN runs pqn_breakout.yaml's settings (128 envs x 32-step rollouts, 2 epochs x 32 minibatches); the DQN runs
dqn_sps.py's loop (dqn_breakout.yaml's settings with 8 envs) past learning_starts with a 50k replay memory,
which costs the same per update as the 1M one. Prints one JSON object; the issue's target ratio is >= 4.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

import agents  # noqa: F401  (registers the dqn and pqn tasks)
from core.config import load_config
from core.device import resolve_device, set_threads
from core.driver import build_task
from core.run import Run
from core.task import schema_for
from dqn_sps import LoopTimer

ROOT = Path(__file__).resolve().parents[1]
DQN_REPLAY = 50_000  # transitions: the update samples 32 of them whatever the capacity


class PQNTimer(LoopTimer):
    """dqn_sps's timing of whole training steps, around a PQN task built from pqn_breakout.yaml."""

    def __init__(self, device: str, env_threads: int, threads: int) -> None:
        overrides = [f"run.root={tempfile.mkdtemp(prefix='rlgen-bench-')}", f"device={device}",
                     f"env.num_threads={env_threads}", f"threads={threads}"]
        config = load_config(ROOT / "experiments" / "pqn_breakout.yaml", overrides, schema_for)
        self.task = build_task(Run(Path(config.run.root), config))
        # One rollout first: it starts the games, and the first forward passes warm the kernels up.
        with self.task.precision.autocast():
            self.task.train_step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of PQN and DQN timing")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="seconds of timing per round and loop (PQN: at least one 4,096-step rollout)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--env-threads", type=int, default=0, help="ale-py emulator threads (env.num_threads)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    set_threads(args.threads)
    pqn = PQNTimer(str(device), args.env_threads, args.threads)
    dqn = LoopTimer(8, DQN_REPLAY, str(device), args.env_threads)
    rounds: dict[str, list[float]] = {"pqn": [], "dqn": [], "ratio": []}
    # Back to back within a round, so each ratio compares two figures taken under the same load of this
    # shared machine; the median over rounds is reported.
    for _ in range(args.rounds):
        pqn_sps = pqn.sps(args.seconds)
        dqn_sps = dqn.sps(args.seconds)
        for key, value in (("pqn", pqn_sps), ("dqn", dqn_sps), ("ratio", pqn_sps / dqn_sps)):
            rounds[key].append(value)
    pqn.close()
    dqn.close()
    print(json.dumps({
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "env_threads": args.env_threads,
        "precision": pqn.task.precision.name,
        "rounds": args.rounds,
        "pqn_sps": round(float(np.median(rounds["pqn"])), 1),
        "dqn_sps": round(float(np.median(rounds["dqn"])), 1),
        "ratio": round(float(np.median(rounds["ratio"])), 2),
        "pqn_sps_rounds": [round(value, 1) for value in rounds["pqn"]],
        "dqn_sps_rounds": [round(value, 1) for value in rounds["dqn"]],
        "ratio_rounds": [round(value, 2) for value in rounds["ratio"]],
        "target_ratio": 4.0,
    }))


if __name__ == "__main__":
    main()
