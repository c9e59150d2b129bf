"""FID over several seeds: rlgen's GAN experiment (as `rlgen run` trains and scores it) beside the plain
DataLoader DCGAN loop (`gan_reference.py`, the reference whatever the experiment), so a difference between the two can be set against the
seed-to-seed spread of each. Prints one JSON object: per variant the FID, mode KL and the smallest and largest
class fraction of every seed, and the mean and standard deviation of the FID.

    python benchmarks/gan_seeds.py --seeds 1 2 3 --epochs 15 --variant ema=train.ema_decay=0.999
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEYS = ("eval/fid", "eval/mode_kl", "eval/min_class_fraction", "eval/max_class_fraction")


def _check(process: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if process.returncode != 0:
        sys.exit(f"{' '.join(map(str, process.args))} failed ({process.returncode}):\n{process.stderr[-3000:]}")
    return process


def _rlgen(experiment: str, seed: int, epochs: int, overrides: list[str], root: Path, name: str) -> dict[str, float]:
    """Train and score one seed through the CLI; the figures of its summary.json."""
    command = [sys.executable, "-m", "core.cli", "run", experiment, f"seed={seed}", f"train.epochs={epochs}",
               f"run.root={root}", f"name={name}", *overrides]
    _check(subprocess.run(command, capture_output=True, text=True))
    (summary,) = (root / name).glob("*/summary.json")
    figures = json.loads(summary.read_text())
    return {key.split("/")[1]: figures[key] for key in KEYS}


def _reference(seed: int, epochs: int, judge: str, device: str) -> dict[str, float]:
    """Train and score one seed of the plain loop; the same figures."""
    script = Path(__file__).with_name("gan_reference.py")
    command = [sys.executable, str(script), "--epochs", str(epochs), "--seed", str(seed), "--judge", judge,
               "--device", device]
    figures = json.loads(_check(subprocess.run(command, capture_output=True, text=True)).stdout)
    return {key.split("/")[1]: figures[key] for key in KEYS}


def _report(name: str, seed: int, figures: dict[str, float], start: float) -> None:
    """One line per finished run on stderr, so a run cut short still shows what it finished."""
    print(json.dumps({"variant": name, "seed": seed, "elapsed_s": round(time.perf_counter() - start, 1), **figures}),
          file=sys.stderr, flush=True)


def _summary(per_seed: dict[int, dict[str, float]]) -> dict[str, object]:
    fids = [figures["fid"] for figures in per_seed.values()]
    return {"fid_mean": round(statistics.mean(fids), 2),
            "fid_std": round(statistics.stdev(fids), 2) if len(fids) > 1 else None,
            "seeds": {seed: {key: round(value, 4) for key, value in figures.items()} for seed, figures in per_seed.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="experiments/gan_mnist.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=key=value[,key=value] (or NAME= for none): an rlgen variant to train; "
                             "default: the experiment as it stands, named rlgen")
    parser.add_argument("--judge", default="runs/judges/mnist_cnn.pt",
                        help="the reference's judge (rlgen's runs take their config's eval.classifier)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--root", default=None, help="folder for the rlgen runs (default: a temporary one)")
    args = parser.parse_args()

    root = Path(args.root or tempfile.mkdtemp(prefix="rlgen-gan-seeds-"))
    variants: dict[str, list[str]] = {}
    for text in args.variant or ["rlgen="]:
        name, _, overrides = text.partition("=")
        variants[name] = [f"device={args.device}", *filter(None, overrides.split(","))]
    results: dict[str, dict[int, dict[str, float]]] = {name: {} for name in [*variants, "reference"]}
    start = time.perf_counter()
    for seed in args.seeds:  # seed by seed, so a cut-short run still compares like with like
        for name, overrides in variants.items():
            results[name][seed] = _rlgen(args.experiment, seed, args.epochs, overrides, root, f"{name}_s{seed}")
            _report(name, seed, results[name][seed], start)
        results["reference"][seed] = _reference(seed, args.epochs, args.judge, args.device)
        _report("reference", seed, results["reference"][seed], start)
    print(json.dumps({"experiment": args.experiment, "epochs": args.epochs, "device": args.device,
                      "wall_s": round(time.perf_counter() - start, 1),
                      **{name: _summary(per_seed) for name, per_seed in results.items()}}))


if __name__ == "__main__":
    main()
