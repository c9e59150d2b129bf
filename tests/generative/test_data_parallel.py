"""Data-parallel training through `rlgen run ... distributed.nproc=2` (torchrun, gloo on the CPU): two processes
end where one process with the combined batch ends, rank 0 alone writes the run folder, resume continues it,
and the RBM's explicitly averaged statistics train it."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.checkpoint import load_file
from core.cli import main
from mnist_data import MNIST_ROOT, needs_mnist

ROOT = Path(__file__).resolve().parents[2]

# Plain SGD: Adam divides by the root of tiny second moments, which turns float-rounding differences in
# near-zero gradients into visible ones; with SGD the two runs agree to float precision.
# fp32: on a CPU with native bfloat16 `auto` trains the VAE in bf16, which rounds a batch and its halves apart.
VAE_SHORT = ["train.epochs=0.05", "threads=1", "precision=fp32", "run.checkpoint_every=10", "run.log_every=10",
             "run.eval_every=100", "eval.k=10", "eval.images=100", "optim.name=sgd", "optim.lr=0.01",
             f"data.root={MNIST_ROOT}"]


def _run(root: Path, experiment: str, *overrides: str) -> Path:
    assert main(["run", str(ROOT / "experiments" / experiment), f"run.root={root}", *overrides]) == 0
    [run_dir] = [path for path in root.glob("*/*") if path.is_dir()]
    return run_dir


def _model(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / f"step-{step:012d}.pt")["task"]["model"]


@needs_mnist
def test_two_processes_train_the_vae_one_process_with_the_whole_batch_trains(tmp_path: Path) -> None:
    single = _run(tmp_path / "one", "vae_mnist.yaml", *VAE_SHORT)
    parallel = _run(tmp_path / "two", "vae_mnist.yaml", *VAE_SHORT, "distributed.nproc=2")
    expected, got = _model(single, 30), _model(parallel, 30)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-6)
        assert not torch.equal(tensor, _model(single, 10)[name])  # it did learn between the checkpoints

    # Rank 0 alone wrote: one event file, one log, one run folder.
    assert len(list(parallel.glob("events.out.tfevents.*"))) == 1
    names = sorted(path.name for path in parallel.iterdir() if not path.name.startswith("events."))
    assert names == ["checkpoints", "config.yaml", "log.txt", "summary.json"]
    assert len(list((tmp_path / "two").glob("*/*"))) == 1
    events = EventAccumulator(str(parallel))
    events.Reload()
    # Logged figures are the mean over both ranks' shards, the figures of the one-process run.
    one = EventAccumulator(str(single))
    one.Reload()
    for tag in ("losses/elbo", "losses/kl"):
        assert [e.step for e in events.Scalars(tag)] == [10, 20, 30]
        for mine, theirs in zip(events.Scalars(tag), one.Scalars(tag)):
            assert mine.value == pytest.approx(theirs.value, rel=1e-5)
    summary = json.loads((parallel / "summary.json").read_text())
    assert summary["eval/nll_samples"] == 10

    # Resume relaunches torchrun and continues to the same end.
    (parallel / "checkpoints" / "step-000000000030.pt").unlink()
    assert main(["resume", str(parallel)]) == 0
    for name, tensor in got.items():
        torch.testing.assert_close(_model(parallel, 30)[name], tensor, rtol=0, atol=1e-6)
    assert "resumed from step-000000000020.pt" in (parallel / "log.txt").read_text()


@needs_mnist
def test_two_processes_average_the_rbm_statistics_and_learn_as_one_does(tmp_path: Path) -> None:
    settings = ["train.epochs=0.2", "train.chains=100", "train.lr=0.05", "train.lr_schedule=constant",
                "model.hidden=50", "threads=1", "run.log_every=20", "run.eval_every=1000", "run.checkpoint_every=1000",
                "eval.ais_runs=20", "eval.ais_temperatures=1000", "eval.images=500", f"data.root={MNIST_ROOT}"]
    parallel = _run(tmp_path / "two", "rbm_mnist.yaml", *settings, "distributed.nproc=2")
    single = _run(tmp_path / "one", "rbm_mnist.yaml", *settings)
    events = EventAccumulator(str(parallel))
    events.Reload()
    errors = [event.value for event in events.Scalars("losses/reconstruction")]
    assert errors[-1] < 0.92 * errors[0]  # 67 -> 59 in 120 small steps
    state = load_file(sorted((parallel / "checkpoints").iterdir())[-1])["task"]
    assert state["trainer"]["chains"]["states"].shape == (50, 784)  # each rank holds half the chains
    # Different Gibbs draws, the same expected update: the two models score alike (-178.7 both when measured;
    # a summed instead of averaged gradient doubles the step, which scores -163 here).
    two, one = (json.loads((run / "summary.json").read_text())["eval/test_loglik"] for run in (parallel, single))
    assert abs(two - one) < 3.0 and one < -100


@needs_mnist
def test_sigterm_stops_both_ranks_at_one_step_with_a_checkpoint_and_no_traceback(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "core.cli", "run", str(ROOT / "experiments" / "vae_mnist.yaml"),
               f"run.root={tmp_path}", "distributed.nproc=2", "train.epochs=20", "run.checkpoint_every=50",
               "run.eval_every=100000", *(item for item in VAE_SHORT[1:] if not item.startswith("run."))]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("*/*/checkpoints/step-*.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 0 and "Traceback" not in errors
    [run_dir] = tmp_path.glob("*/*")
    stopped = re.search(r"stopped at step (\d+) of 12000", (run_dir / "log.txt").read_text())
    assert stopped and (run_dir / "checkpoints" / f"step-{int(stopped.group(1)):012d}.pt").is_file()
