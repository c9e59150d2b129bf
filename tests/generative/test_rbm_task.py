"""The rbm and dbn tasks end to end: PCD chains persist and resume exactly, evaluations log grids and the
log-likelihood (exact beside AIS on a tiny model), real MNIST through `rlgen run`, and mistakes exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.checkpoint import load_file
from core.cli import main
from core.config import build_config, read_yaml_file
from core.run import Run
from core.sampling import DeviceBatches
from core.task import schema_for
from generative import image_task, rbm_task
from generative.data import DataConfig, ImageData, evaluation_images
from generative.rbm import RBM, logit
from mnist_data import MNIST_ROOT, needs_mnist

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
RBM_MNIST = ROOT / "experiments" / "rbm_mnist.yaml"
DBN_MNIST = ROOT / "experiments" / "dbn_mnist.yaml"
# A 4x5-pixel dataset: 20 visible units, so a 12-hidden-unit RBM's log Z can be enumerated.
TINY = ["threads=1", "device=cpu", "train.batch_size=10", "eval.filters=4", "eval.grid_chains=3",
        "eval.grid_snapshots=2", "eval.grid_gibbs_steps=5", "eval.quick_ais_temperatures=200",
        "eval.ais_temperatures=2000", "eval.ais_runs=50"]
TINY_RBM = [*TINY, "model.hidden=12"]


def _tiny_images(config: DataConfig, device: torch.device) -> ImageData:
    """Two noisy stroke patterns on 4x5 pixels, 300 for training and 60 for testing."""
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.zeros(2, 1, 4, 5)
    prototypes[0, 0, :, 1], prototypes[1, 0, 2, :] = 1.0, 1.0

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(2, (count,), generator=generator)
        noise = torch.rand(count, 1, 4, 5, generator=generator) * 0.3
        return ((prototypes[labels] * 0.7 + noise) * 255).to(torch.uint8).to(device), labels.to(device)

    (train, train_labels), (test, test_labels) = draw(300), draw(60)
    return ImageData("tiny", train, train_labels, test, test_labels, train.float().mean(0) / 255)


@pytest.fixture
def tiny_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_task, "load_images", _tiny_images)


def _run(experiment: Path, tmp_path: Path, *overrides: str) -> Path:
    assert main(["run", str(experiment), f"run.root={tmp_path}", f"data.root={MNIST_ROOT}", *overrides]) == 0
    [run_dir] = (tmp_path / experiment.stem).iterdir()
    return run_dir


def test_pcd_chains_persist_across_updates(tiny_data: None, tmp_path: Path) -> None:
    config = build_config(read_yaml_file(RBM_MNIST), [f"run.root={tmp_path}", *TINY_RBM, "train.gibbs_steps=2"],
                          str(RBM_MNIST), schema_for, default_name="rbm_tiny")
    run = Run.create(config)
    task = rbm_task.RBMTask(config, run, torch.device("cpu"))
    for _ in range(3):
        before = RBM(*(tensor.clone() for tensor in task.dbn.layers[0].state_dict().values()))
        chains = task.trainer.chains.states.clone()
        generator = torch.Generator().manual_seed(0)
        generator.set_state(task.generator.get_state())
        task.train_step()
        # The update's negative phase continued the previous chains, 2 sweeps further, not restarted at data.
        assert torch.equal(task.trainer.chains.states, before.gibbs(chains, 2, generator))
    assert task.trainer.chains.states.shape == (100, 20)
    assert torch.equal(task.state_dict()["trainer"]["chains"]["states"], task.trainer.chains.states)
    run.close()


@pytest.mark.parametrize("experiment, overrides", [
    (RBM_MNIST, ["model.hidden=12", "train.epochs=2"]),
    (DBN_MNIST, ["model.layers=[{hidden: 8, method: pcd, centered: true}, {hidden: 6, method: pcd}]",
                 "train.epochs=1", "model.propagate=samples"]),
])
def test_resume_after_a_kill_ends_with_the_uninterrupted_state(
        tiny_data: None, tmp_path: Path, experiment: Path, overrides: list[str]) -> None:
    """60 updates, checkpoints at 25, 50 and 60; resumed from 25 (for the DBN inside its first layer, so the
    resumed part starts the second), the end state equals the uninterrupted run's, PCD chains included."""
    run_dir = _run(experiment, tmp_path, *TINY, *overrides, "run.checkpoint_every=25", "run.eval_every=1000")
    checkpoints = run_dir / "checkpoints"
    uninterrupted = load_file(checkpoints / "step-000000000060.pt")["task"]
    for step in (60, 50):
        (checkpoints / f"step-{step:012d}.pt").unlink()
    assert main(["resume", str(run_dir)]) == 0
    resumed = load_file(checkpoints / "step-000000000060.pt")["task"]
    assert len(resumed["layers"]) == len(uninterrupted["layers"])
    for mine, theirs in zip(resumed["layers"], uninterrupted["layers"]):
        for name, tensor in theirs.items():
            assert torch.equal(mine[name], tensor), name
    assert torch.equal(resumed["trainer"]["chains"]["states"], uninterrupted["trainer"]["chains"]["states"])
    for name, tensor in uninterrupted["trainer"]["update"].items():
        assert torch.equal(resumed["trainer"]["update"][name], tensor), name
    assert torch.equal(resumed["generator"], uninterrupted["generator"])


def test_tiny_rbm_reports_ais_beside_exact_log_z_and_logs_grids(tiny_data: None, tmp_path: Path) -> None:
    run_dir = _run(RBM_MNIST, tmp_path, *TINY_RBM, "train.epochs=2", "run.eval_every=30", "train.lr=0.05")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert abs(summary["eval/log_z"] - summary["eval/log_z_exact"]) < 0.1
    assert summary["eval/log_z_low"] < summary["eval/log_z"] < summary["eval/log_z_high"]
    assert abs(summary["eval/test_loglik"] - summary["eval/test_loglik_exact"]) < 0.1
    assert -20 * 0.6932 < summary["eval/test_loglik"] < 0 and summary["eval/ais_runs"] == 50
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert {"samples/chains_from_noise", "samples/chains_from_test", "samples/filters"} <= set(events.Tags()["images"])
    assert [event.step for event in events.Scalars("eval/test_loglik_quick")] == [30]
    assert [event.step for event in events.Scalars("eval/test_loglik")] == [60]

    assert main(["eval", str(run_dir), "eval.ais_runs=10", "eval.ais_temperatures=300"]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["step"] == 60 and result["eval/ais_runs"] == 10 and result["eval/ais_temperatures"] == 300
    assert "eval/raise_test_loglik" not in result  # off unless asked for

    # RAISE on 40 of the 60 test images, beside AIS's estimate on the same images: just below it.
    assert main(["eval", str(run_dir), "eval.raise_images=40", "eval.raise_temperatures=2000"]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert (result["eval/raise_images"], result["eval/raise_chains"], result["eval/raise_temperatures"]) == (40, 1, 2000)
    assert result["eval/test_loglik_on_raise_images"] - 0.3 < result["eval/raise_test_loglik"] < \
        result["eval/test_loglik_on_raise_images"] + 0.1


def test_dbn_reports_the_bound_and_rejects_bad_layers(tiny_data: None, tmp_path: Path, capsys) -> None:
    run_dir = _run(DBN_MNIST, tmp_path / "good", *TINY, "model.layers=[{hidden: 10}, {hidden: 6}, {hidden: 4}]",
                   "train.epochs=0.5")
    summary = json.loads((run_dir / "summary.json").read_text())
    [final] = (run_dir / "checkpoints").glob("step-*45.pt")
    assert [layer["weights"].shape for layer in load_file(final)["task"]["layers"]] == [(20, 10), (10, 6), (6, 4)]
    assert -40 < summary["eval/test_loglik_bound"] < 0
    assert abs(summary["eval/test_loglik_bound"] - summary["eval/test_loglik_bound_exact"]) < 0.2
    assert main(["run", str(DBN_MNIST), f"run.root={tmp_path}", *TINY, "model.layers=[]"]) == 2
    assert "at least one layer" in capsys.readouterr().err
    assert main(["run", str(DBN_MNIST), f"run.root={tmp_path}", *TINY, "model.layers=[{hidden: 5, method: pdc}]"]) == 2
    assert "model.layers[0].method: unknown 'pdc'" in capsys.readouterr().err
    assert main(["run", str(DBN_MNIST), f"run.root={tmp_path}", *TINY, "eval.raise_images=10"]) == 2
    assert "RAISE estimates one RBM's log-likelihood; this DBN has 3 layers" in capsys.readouterr().err


def _newest_checkpoint(run_dir: Path) -> Path:
    return sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]


def test_dbn_layers_start_from_trained_runs_and_keep_them_with_zero_epochs(
        tiny_data: None, tmp_path: Path, capsys) -> None:
    rbm_dir = _run(RBM_MNIST, tmp_path / "rbm", *TINY, "model.hidden=8", "train.epochs=1", "run.eval_every=1000")
    trained = load_file(_newest_checkpoint(rbm_dir))["task"]["layers"][0]
    on_rbm = f"model.layers=[{{hidden: 8, init_from: {rbm_dir}, epochs: 0}}, {{hidden: 6, epochs: 1}}]"
    dbn_dir = _run(DBN_MNIST, tmp_path / "dbn", *TINY, on_rbm, "run.eval_every=1000")
    state = load_file(_newest_checkpoint(dbn_dir))
    bottom, top = state["task"]["layers"]
    assert state["driver"]["step"] == 30  # the second layer's 300 / 10 updates only
    for name, tensor in trained.items():
        assert torch.equal(bottom[name], tensor), name
    assert top["weights"].shape == (8, 6) and top["weights"].abs().max() > 0.05  # trained from 0.01-sized noise
    summary = json.loads((dbn_dir / "summary.json").read_text())
    assert abs(summary["eval/test_loglik_bound"] - summary["eval/test_loglik_bound_exact"]) < 0.2

    # A checkpoint file for the bottom, a DBN run's second layer in the middle, a new layer on top.
    stacked = (f"model.layers=[{{hidden: 8, init_from: {_newest_checkpoint(rbm_dir)}, epochs: 0}}, "
               f"{{hidden: 6, init_from: {dbn_dir}, epochs: 0}}, {{hidden: 4, epochs: 0.5}}]")
    three = _run(DBN_MNIST, tmp_path / "three", *TINY, stacked, "run.eval_every=1000")
    layers = load_file(_newest_checkpoint(three))["task"]["layers"]
    assert [layer["weights"].shape for layer in layers] == [(20, 8), (8, 6), (6, 4)]
    assert torch.equal(layers[1]["weights"], top["weights"]) and torch.equal(layers[0]["weights"], bottom["weights"])

    # A loaded layer on top of a fresh one joins the stack once the bottom has trained, for the final bound.
    on_top = _run(DBN_MNIST, tmp_path / "on_top", *TINY, "run.eval_every=1000",
                  f"model.layers=[{{hidden: 8, epochs: 0.5}}, {{hidden: 6, init_from: {dbn_dir}, epochs: 0}}]")
    layers = load_file(_newest_checkpoint(on_top))["task"]["layers"]
    assert len(layers) == 2 and torch.equal(layers[1]["weights"], top["weights"])
    assert "eval/test_loglik_bound" in json.loads((on_top / "summary.json").read_text())

    bad = {f"model.layers=[{{hidden: 9, init_from: {rbm_dir}, epochs: 0}}, {{hidden: 6}}]":
           "has a 20-8 RBM at depth 0; this layer is 20-9",
           f"model.layers=[{{hidden: 8}}, {{hidden: 6, init_from: {rbm_dir}}}]": "holds 1 trained layer(s), none at depth 1",
           f"model.layers=[{{hidden: 8, init_from: {tmp_path / 'nowhere'}}}]": "does not exist",
           f"model.layers=[{{hidden: 8, init_from: {tmp_path}}}]": "not a run directory",
           "model.layers=[{hidden: 8, epochs: 0}, {hidden: 6}]": "model.layers[0].epochs: must be > 0",
           f"model.layers=[{{hidden: 8, init_from: {rbm_dir}, epochs: 0}}]": "nothing to train"}
    for layers_override, message in bad.items():
        assert main(["run", str(DBN_MNIST), f"run.root={tmp_path / 'bad'}", *TINY, layers_override]) == 2
        assert message in capsys.readouterr().err


def test_rbm_trains_on_from_a_trained_run(tiny_data: None, tmp_path: Path) -> None:
    """CD-1, then more updates by CD-5 from where it ended: the second run's first update moves the first run's
    weights by a small step; a run that started from fresh noise would differ from them by their whole size."""
    first = _run(RBM_MNIST, tmp_path / "cd1", *TINY_RBM, "train.epochs=1", "run.eval_every=1000")
    trained = load_file(_newest_checkpoint(first))["task"]["layers"][0]
    second = _run(RBM_MNIST, tmp_path / "cd5", *TINY_RBM, f"model.init_from={first}", "train.epochs=0.1",
                  "train.gibbs_steps=5", "run.eval_every=1000", "run.checkpoint_every=1",
                  "run.keep_checkpoints=5")
    after_one = load_file(second / "checkpoints" / "step-000000000001.pt")["task"]["layers"][0]
    change = (after_one["weights"] - trained["weights"]).abs()
    assert 0 < change.max() < 0.05 * trained["weights"].abs().max()


def test_bad_rbm_settings_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["run", str(RBM_MNIST), f"run.root={tmp_path}", "train.method=pcdd"]) == 2
    assert "train.method: unknown 'pcdd'" in capsys.readouterr().err
    assert main(["run", str(RBM_MNIST), f"run.root={tmp_path}", "eval.ais_temperatures=2"]) == 2
    assert "ais_temperatures" in capsys.readouterr().err
    assert main(["run", str(RBM_MNIST), f"run.root={tmp_path}", "eval.raise_chains=0"]) == 2
    assert "raise_chains >= 1" in capsys.readouterr().err


@needs_mnist
def test_short_pcd_run_on_mnist_logs_grids_and_the_test_log_likelihood(tmp_path: Path) -> None:
    run_dir = _run(RBM_MNIST, tmp_path, "threads=1", "device=cpu", "train.epochs=0.5", "train.initial_momentum=0.5",
                   "train.lr_schedule=constant", "run.eval_every=150",
                   "run.log_every=50", "eval.ais_runs=20", "eval.ais_temperatures=1000",
                   "eval.quick_ais_temperatures=100", "eval.grid_gibbs_steps=20")
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    images = set(events.Tags()["images"])
    assert {"samples/chains_from_noise", "samples/chains_from_test", "samples/filters"} <= images
    assert [event.step for event in events.Images("samples/filters")] == [150, 300]
    reconstruction = [event.value for event in events.Scalars("losses/reconstruction")]
    assert reconstruction[-1] < reconstruction[0] - 10  # about 75 over the first 50 updates, 46 by 300
    summary = json.loads((run_dir / "summary.json").read_text())
    # 300 PCD updates from the base rate (about -206 nats): far from -85, well above chance (-543).
    assert -200 < summary["eval/test_loglik"] < -110
    assert summary["eval/log_z_low"] < summary["eval/log_z"] < summary["eval/log_z_high"]
    assert summary["eval/test_pseudo_loglik"] < 0 and summary["eval/ais_seconds"] > 0


@pytest.mark.parametrize("binarize", ["dynamic", "threshold"])
def test_initial_biases_and_offsets_follow_the_pixels_as_the_model_sees_them(
        tiny_data: None, tmp_path: Path, binarize: str) -> None:
    """Thresholded, a pixel's frequency of being on is not its mean grey level: the initial visible biases,
    offsets and AIS base rate take the thresholded training images' mean (as PyDeep's RBM_MNIST_big.py)."""
    config = build_config(read_yaml_file(RBM_MNIST), [f"run.root={tmp_path}", *TINY_RBM, f"data.binarize={binarize}"],
                          str(RBM_MNIST), schema_for, default_name="rbm_tiny")
    run = Run.create(config)
    task = rbm_task.RBMTask(config, run, torch.device("cpu"))
    train = task.data.train.flatten(1)
    means = (train >= 128).float().mean(0) if binarize == "threshold" else train.float().mean(0) / 255
    if binarize == "threshold":
        assert (means - task.data.pixel_means.flatten()).abs().max() > 0.1  # the noise pixels: 0.15 vs 0
    layer = task.dbn.layers[0]
    assert torch.allclose(layer.visible_offset, means.clamp(1e-3, 1 - 1e-3))
    assert torch.allclose(layer.visible_bias, logit(means, 1e-3))
    assert torch.allclose(task._input_mean(0), means)
    run.close()


def test_rbm_mnist_thresholds_as_pydeep_from_grey_level_128() -> None:
    """PyDeep's load_mnist(binary=True) turns a pixel on when its grey level in [0, 1] is >= 0.5, which is
    k >= 128 whether the levels k were divided by 255 or by 256; training and test images alike."""
    config = build_config(read_yaml_file(RBM_MNIST), [], str(RBM_MNIST), schema_for)
    levels = torch.arange(256).to(torch.uint8).view(1, 1, 16, 16)
    pydeep = (torch.arange(256) / 255 >= 0.5).float()
    assert torch.equal(pydeep, (torch.arange(256) / 256 >= 0.5).float())
    assert torch.equal(evaluation_images(levels, config.data).flatten(), pydeep)
    batches = DeviceBatches(levels.expand(4, 1, 16, 16), 2, config.data.binarize, config.data.threshold)
    assert torch.equal(batches.next().flatten(1), pydeep.expand(2, -1))
