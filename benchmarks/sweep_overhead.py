"""What Ray Tune costs a sweep: 4 short XOR runs as one `rlgen sweep` against the same 4 runs launched one
after another as plain `rlgen run` processes. Prints one JSON object with both wall times, the per-trial
overhead ((sweep - sequential) / 4), the mean plain run and how long starting and stopping local Ray takes.
`--cpus-per-trial` below the machine's cores lets Ray run trials side by side, which can make the sweep
faster than the sequential runs.

    python benchmarks/sweep_overhead.py --steps 1000
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
XOR = str(ROOT / "experiments" / "xor_mlp.yaml")
SEEDS = (1, 2, 3, 4)


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def _ray_start_stop_s() -> float:
    """Seconds to start local Ray as `rlgen sweep` does and shut it down again (Ray's import not counted)."""
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    ray.shutdown()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="training steps of each XOR run")
    parser.add_argument("--cpus-per-trial", type=float, default=float(os.cpu_count() or 1),
                        help="CPUs each trial holds (default: all, so trials run one at a time like the runs)")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "core.cli"]
    common = [f"train.steps={args.steps}"]
    ray_s = _ray_start_stop_s()
    with tempfile.TemporaryDirectory(prefix="rlgen-sweep-bench-") as folder:
        runs = [_timed([*cli, "run", XOR, *common, f"run.root={folder}/runs", f"seed={seed}"]) for seed in SEEDS]
        sweep_s = _timed([*cli, "sweep", XOR, *common, f"run.root={folder}/sweep",
                          f"--cpus-per-trial={args.cpus_per_trial}", "--grid", "seed=" + ",".join(map(str, SEEDS))])
    sequential_s = sum(runs)
    print(json.dumps({
        "trials": len(SEEDS),
        "steps_per_trial": args.steps,
        "cpus": os.cpu_count(),
        "cpus_per_trial": args.cpus_per_trial,
        "sequential_wall_s": round(sequential_s, 2),
        "sequential_per_run_s": round(sequential_s / len(SEEDS), 2),
        "sweep_wall_s": round(sweep_s, 2),
        "per_trial_overhead_s": round((sweep_s - sequential_s) / len(SEEDS), 2),
        "ray_start_stop_s": round(ray_s, 2),
    }))


if __name__ == "__main__":
    main()
