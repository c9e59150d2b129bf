"""The autoencoder: its errors against a naive computation, PCA on a known plane, and the task end to end on real
MNIST (the error falls, the code map and the other images are logged, resume ends as an uninterrupted run)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.checkpoint import load_file
from core.cli import main
from core.errors import UserError
from generative.autoencoder import Autoencoder, AutoencoderModelConfig, reconstruction_errors
from generative.autoencoder_task import principal_plane
from mnist_data import MNIST_ROOT, needs_mnist

ROOT = Path(__file__).resolve().parents[2]
AUTOENCODER = str(ROOT / "experiments" / "autoencoder_mnist.yaml")
TINY = ("model.hidden=[64]", "train.batch_size=50", "eval.train_images=500", "eval.map_images=500",
        "eval.map_size=64", "threads=1")


def test_errors_equal_a_naive_computation() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, generator=generator, dtype=torch.float64) * 4
    targets = torch.rand(3, 7, generator=generator, dtype=torch.float64)
    targets[0] = (targets[0] > 0.5).double()  # binary and grey targets alike
    errors = reconstruction_errors(logits, targets)
    for image in range(3):
        p = [1 / (1 + math.exp(-value)) for value in logits[image].tolist()]
        t = targets[image].tolist()
        cross_entropy = -sum(ti * math.log(pi) + (1 - ti) * math.log(1 - pi) for pi, ti in zip(p, t))
        squared_error = sum((pi - ti) ** 2 for pi, ti in zip(p, t)) / len(t)
        assert float(errors.cross_entropy[image]) == pytest.approx(cross_entropy, rel=1e-12)
        assert float(errors.squared_error[image]) == pytest.approx(squared_error, rel=1e-12)


def test_principal_plane_recovers_the_plane_the_codes_lie_in() -> None:
    generator = torch.Generator().manual_seed(1)
    axes, _ = torch.linalg.qr(torch.randn(5, 2, generator=generator, dtype=torch.float64))
    # Centred, uncorrelated coordinates with spreads 3 and 1: their own principal axes are the coordinate axes.
    raw = torch.randn(400, 2, generator=generator, dtype=torch.float64)
    uncorrelated, _ = torch.linalg.qr(raw - raw.mean(dim=0))
    coordinates = uncorrelated * torch.tensor([3.0, 1.0], dtype=torch.float64) * 20
    plane = principal_plane(coordinates @ axes.T + 7.0)
    for axis in range(2):  # each principal coordinate is the generating one, up to its sign
        sign = torch.sign((plane[:, axis] * coordinates[:, axis]).sum())
        assert torch.allclose(plane[:, axis] * sign, coordinates[:, axis], atol=1e-9)


def test_the_code_has_latent_dimensions_and_reconstructions_are_images() -> None:
    model = Autoencoder(AutoencoderModelConfig(hidden=[16], latent=3))
    images = torch.rand(4, 1, 28, 28)
    assert model.encode(images).shape == (4, 3)
    with torch.no_grad():
        reconstructions = model.images(model.encode(images))
    assert reconstructions.shape == (4, 1, 28, 28)
    assert 0 <= float(reconstructions.min()) <= float(reconstructions.max()) <= 1


def _run(tmp_path: Path, *overrides: str) -> Path:
    assert main(["run", AUTOENCODER, f"run.root={tmp_path}", f"data.root={MNIST_ROOT}", *TINY, *overrides]) == 0
    [run_dir] = (tmp_path / "autoencoder_mnist").iterdir()
    return run_dir


@needs_mnist
def test_a_tiny_run_learns_and_logs_the_code_map(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "train.epochs=0.2", "run.eval_every=80", "run.log_every=20")
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    for tag in ("samples/reconstructions", "samples/code_map", "samples/code_manifold"):
        assert [event.step for event in events.Images(tag)] == [80, 160, 240], tag
    code_map = events.Images("samples/code_map")[-1]
    assert (code_map.width, code_map.height) == (64, 64)
    bce = [event.value for event in events.Scalars("losses/bce")]
    mse = [event.value for event in events.Scalars("losses/mse")]
    assert bce[-1] < bce[0] - 50 and mse[-1] < mse[0]
    test_bce = [event.value for event in events.Scalars("eval/test_bce")]
    assert test_bce[-1] < test_bce[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    # Grey-level MNIST: about 544 nats per image for a constant 0.5, about 206 for each pixel's mean image.
    assert 60 < summary["eval/test_bce"] < 206 and 0 < summary["eval/test_mse"] < 0.07
    assert summary["eval/train_bce"] == pytest.approx(summary["eval/test_bce"], rel=0.1)


@needs_mnist
def test_codes_wider_than_two_are_mapped_by_pca_and_trained_by_mse(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "train.epochs=0.02", "model.latent=5", "train.loss=mse")
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert {"samples/code_map", "samples/reconstructions"} <= set(events.Tags()["images"])
    assert "samples/code_manifold" not in events.Tags()["images"]


@needs_mnist
def test_resume_after_a_kill_ends_with_the_uninterrupted_parameters(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "train.epochs=0.1", "run.checkpoint_every=60", "run.eval_every=1000")
    final = run_dir / "checkpoints" / "step-000000000120.pt"
    uninterrupted = load_file(final)["task"]
    final.unlink()  # as if killed between checkpoint 60 and the end
    assert main(["resume", str(run_dir)]) == 0
    resumed = load_file(final)["task"]
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    assert resumed["batches"]["position"] == uninterrupted["batches"]["position"]


@pytest.mark.parametrize("override", ["train.loss=l1", "train.epochs=0"])
def test_bad_settings_exit_2_in_one_line_before_any_data_is_read(tmp_path: Path, capsys, override: str) -> None:
    code = main(["run", AUTOENCODER, f"run.root={tmp_path}", f"data.root={tmp_path / 'none'}", "data.download=false",
                 override])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and override.partition("=")[0] in err[0] and "mnist" not in err[0], err


@pytest.mark.parametrize("field, value", [("network", "resnet"), ("latent", 0)])
def test_bad_networks_are_user_errors_naming_the_key(field: str, value: object) -> None:
    with pytest.raises(UserError, match=f"model.{field}"):
        Autoencoder(AutoencoderModelConfig(**{field: value}))
