"""The vae task end to end on real MNIST: it learns, logs the grids, evaluates, resumes exactly, and data
mistakes end with exit code 2."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.checkpoint import load_file
from core.cli import main
from mnist_data import MNIST_ROOT, needs_mnist

ROOT = Path(__file__).resolve().parents[2]
VAE_MNIST = str(ROOT / "experiments" / "vae_mnist.yaml")


def _run(tmp_path: Path, *overrides: str) -> Path:
    """A short vae_mnist.yaml run in fp32: on a native-bf16 CPU `auto` picks bf16, and the bounds below are fp32's."""
    assert main(["run", VAE_MNIST, "precision=fp32", f"run.root={tmp_path}", f"data.root={MNIST_ROOT}", "threads=1",
                 *overrides]) == 0
    [run_dir] = (tmp_path / "vae_mnist").iterdir()
    return run_dir


@needs_mnist
def test_short_run_learns_logs_grids_and_reports_the_bounds(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "train.epochs=1", "run.eval_every=300", "run.log_every=50", "eval.k=200",
                   "eval.images=300", "eval.quick_k=10", "eval.quick_images=100")
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"samples/prior", "samples/reconstructions", "samples/latent_walk"} <= set(tags["images"])
    assert [event.step for event in events.Images("samples/prior")] == [300, 600]
    elbo = [event.value for event in events.Scalars("losses/elbo")]
    assert elbo[-1] > elbo[0] + 60 and elbo[-1] > -200  # about -290 over the first 50 updates, -183 at 600
    assert [event.step for event in events.Scalars("eval/test_nll_quick")] == [300]
    summary = json.loads((run_dir / "summary.json").read_text())
    # The 200-sample bound lies above the ELBO: test NLL below -ELBO.
    assert summary["eval/test_nll"] < -summary["eval/test_elbo"]
    assert 80 < summary["eval/test_nll"] < 200 and summary["eval/nll_samples"] == 200
    assert 1 <= summary["eval/active_units"] <= 50

    for _ in range(2):
        assert main(["eval", str(run_dir), "eval.k=20", "eval.images=100"]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["step"] == 600 and result["eval/nll_samples"] == 20 and result["eval/nll_images"] == 100
    # Each evaluation replaced the previous one's grids and figures at step 600 instead of adding another.
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert [event.step for event in events.Images("samples/prior")] == [300, 600]
    assert [(event.step, event.value) for event in events.Scalars("eval/nll_samples")] == [(600, 20.0)]


@needs_mnist
def test_resume_after_a_kill_ends_with_the_uninterrupted_parameters(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "train.epochs=0.1", "run.checkpoint_every=30", "run.keep_checkpoints=2",
                   "run.eval_every=1000", "eval.k=5", "eval.images=50")
    final = run_dir / "checkpoints" / "step-000000000060.pt"
    uninterrupted = load_file(final)["task"]
    final.unlink()  # as if killed between checkpoint 30 and the end
    assert main(["resume", str(run_dir)]) == 0
    resumed = load_file(final)["task"]
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    assert resumed["batches"]["position"] == uninterrupted["batches"]["position"]


@needs_mnist
def test_grey_levels_conv_network_and_iwae_objective(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "train.epochs=0.05", "data.binarize=none", "model.likelihood=gaussian",
                   "model.network=conv", "model.activation=relu", "train.objective=iwae", "train.samples=5",
                   "eval.k=10", "eval.images=50", "run.eval_every=1000")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert all(torch.isfinite(torch.tensor(value)) for value in summary.values())
    assert "losses/iwae_bound" in summary


def test_missing_data_exits_2_without_a_run_folder(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    code = main(["run", VAE_MNIST, f"run.root={runs}", f"data.root={tmp_path / 'empty'}", "data.download=false"])
    assert code == 2
    assert "missing and data.download is false" in capsys.readouterr().err
    assert not runs.exists() or list(runs.rglob("*.pt")) == []


def test_bad_vae_settings_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["run", VAE_MNIST, f"run.root={tmp_path}", "train.objective=iwea"]) == 2
    assert "train.objective: unknown 'iwea'" in capsys.readouterr().err
