"""The gan task end to end on real MNIST with tiny networks: it trains with finite losses, logs the grid and the
class histogram, evaluates, resumes exactly with the checkpoint's fixed latents, and a diverged run stops with
a clear message before the bad state reaches a checkpoint."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.checkpoint import atomic_save, load_file
from core.cli import main
from core.driver import build_task
from core.experiments import load_components
from core.run import Run
from core.task import schema_for
from generative import gan_task
from mnist_data import MNIST_ROOT, quick_judge

ROOT = Path(__file__).resolve().parents[2]
GAN_MNIST = str(ROOT / "experiments" / "gan_mnist.yaml")
WGAN_GP_MNIST = str(ROOT / "experiments" / "wgan_gp_mnist.yaml")
TINY = ("threads=1", "model.width=8", "train.batch_size=32", "eval.samples=300", "eval.quick_samples=200",
        "eval.grid_images=16", "run.log_every=5")


@pytest.fixture(scope="session")
def judge_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick judge test_fid.py uses too, at the same path, so a session trains it once."""
    return quick_judge(tmp_path_factory.getbasetemp())


def _run(tmp_path: Path, judge: Path, experiment: str, *overrides: str, code: int = 0) -> Path:
    arguments = ["run", experiment, f"run.root={tmp_path}", f"data.root={MNIST_ROOT}", f"eval.classifier={judge}"]
    assert main([*arguments, *TINY, *overrides]) == code
    [run_dir] = (tmp_path / Path(experiment).stem).iterdir()
    return run_dir


def test_short_dcgan_run_logs_finite_losses_grid_histogram_and_scores(tmp_path: Path, judge_file: Path) -> None:
    run_dir = _run(tmp_path, judge_file, GAN_MNIST, "train.epochs=0.016", "run.eval_every=20",
                   "run.checkpoint_every=20")
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0, "histograms": 0})
    events.Reload()
    assert [event.step for event in events.Images("samples/fixed_grid")] == [20, 30]
    assert [event.step for event in events.Histograms("eval/class_histogram")] == [20, 30]
    for tag in ("losses/generator", "losses/discriminator", "charts/d_real", "charts/d_fake"):
        values = [event.value for event in events.Scalars(tag)]
        assert len(values) == 6 and all(torch.isfinite(torch.tensor(values))), tag
    assert [event.step for event in events.Scalars("eval/fid_quick")] == [20]
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == [
        "step-000000000020.pt", "step-000000000030.pt"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval/fid"] > summary["eval/fid_real_floor"] > 0 and summary["eval/fid_samples"] == 300
    assert 0 <= summary["eval/mode_kl"] <= 2.31 and 1 <= summary["eval/inception_score"] <= 10

    assert main(["eval", str(run_dir), "eval.samples=100"]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["step"] == 30 and result["eval/fid_samples"] == 100 and "eval/mode_kl" in result


def test_wgan_gp_run_with_weight_average_logs_critic_and_penalty(tmp_path: Path, judge_file: Path) -> None:
    run_dir = _run(tmp_path, judge_file, WGAN_GP_MNIST, "train.epochs=0.05", "train.ema_decay=0.9",
                   "run.eval_every=1000")
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    for tag in ("losses/generator", "losses/critic", "losses/gradient_penalty", "losses/wasserstein_estimate"):
        assert all(torch.isfinite(torch.tensor([event.value for event in events.Scalars(tag)]))), tag
    state = load_file(run_dir / "checkpoints" / "step-000000000019.pt")["task"]
    assert state["batches"]["position"] == 19 * 5  # five critic batches per generator update
    assert "ema" in state and not torch.equal(state["ema"]["layers.1.weight"], state["generator"]["layers.1.weight"])


@pytest.mark.parametrize("check_every", [1, 50])
def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(
        tmp_path: Path, judge_file: Path, monkeypatch: pytest.MonkeyPatch, capsys, check_every: int) -> None:
    calls = []
    original = gan_task.discriminator_loss

    def poisoned(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """The true loss for five updates, then NaN: a discriminator that blew up at update 6."""
        calls.append(1)
        loss = original(real_logits, fake_logits)
        return loss * float("nan") if len(calls) >= 6 else loss

    monkeypatch.setattr(gan_task, "discriminator_loss", poisoned)
    run_dir = _run(tmp_path, judge_file, GAN_MNIST, "train.epochs=0.016", "run.checkpoint_every=4",
                   "run.eval_every=1000", f"train.check_every={check_every}", code=2)
    error = capsys.readouterr().err
    assert "training diverged at generator update 6" in error
    assert "the last good checkpoint, step-000000000004.pt, is kept" in error
    assert [path.name for path in (run_dir / "checkpoints").iterdir()] == ["step-000000000004.pt"]
    kept = load_file(run_dir / "checkpoints" / "step-000000000004.pt")["task"]
    assert all(torch.isfinite(tensor).all() for tensor in kept["generator"].values())


def test_resume_keeps_the_fixed_latents_and_ends_with_the_uninterrupted_parameters(
        tmp_path: Path, judge_file: Path) -> None:
    run_dir = _run(tmp_path, judge_file, GAN_MNIST, "train.epochs=0.0107", "run.checkpoint_every=10",
                   "run.eval_every=1000")
    checkpoints = run_dir / "checkpoints"
    final = checkpoints / "step-000000000020.pt"
    uninterrupted = load_file(final)["task"]
    middle = load_file(checkpoints / "step-000000000010.pt")
    middle["task"]["fixed_latents"] = -middle["task"]["fixed_latents"]  # latents the seed would not draw again
    atomic_save(middle, checkpoints / "step-000000000010.pt")
    final.unlink()  # as if killed between checkpoint 10 and the end
    assert main(["resume", str(run_dir)]) == 0
    resumed = load_file(final)["task"]
    assert torch.equal(resumed["fixed_latents"], middle["task"]["fixed_latents"])
    for network in ("generator", "discriminator"):
        for name, tensor in uninterrupted[network].items():
            assert torch.equal(resumed[network][name], tensor), (network, name)


@pytest.mark.parametrize("reuse", [True, False])
def test_reuse_latents_scores_the_discriminator_batch_fakes_again_in_one_generator_pass(
    tmp_path: Path, judge_file: Path, reuse: bool
) -> None:
    run_dir = _run(tmp_path, judge_file, GAN_MNIST, "train.epochs=0.003", f"train.reuse_latents={reuse}")
    load_components()
    task = build_task(Run.open(run_dir, schema_for))
    seen: list[torch.Tensor] = []
    task.generator.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].clone()))
    task.train_step()
    if reuse:
        assert len(seen) == 1  # the generator's update reuses the discriminator batch's forward pass
    else:
        discriminator_latents, generator_latents = seen
        assert not torch.equal(discriminator_latents, generator_latents)
    assert seen[-1].shape == (32, 100)


def test_dcgan_updates_with_reused_latents_are_the_plain_example_loops(tmp_path: Path, judge_file: Path) -> None:
    """Two updates of the gan task against PyTorch's DCGAN example loop (sigmoid + BCELoss, torch's default Adam,
    zero_grad / backward / step) on copies of the same networks, fed the task's own batches and latents."""
    run_dir = _run(tmp_path, judge_file, GAN_MNIST, "train.epochs=0.003", "train.reuse_latents=true")
    load_components()
    task = build_task(Run.open(run_dir, schema_for))
    generator, discriminator = copy.deepcopy(task.generator), copy.deepcopy(task.discriminator)
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = torch.nn.BCELoss()
    drawn: dict[str, torch.Tensor] = {}
    next_batch, next_latents = task.batches.next, task._latents

    def record_batch() -> torch.Tensor:
        batch = next_batch()
        drawn["real"] = batch.clone()  # in [0, 1], before the task rescales it in place
        return batch

    def record_latents(count: int) -> torch.Tensor:
        drawn["latents"] = next_latents(count)
        return drawn["latents"]

    task.batches.next, task._latents = record_batch, record_latents
    for _ in range(2):
        figures = task.train_step()
        real, latents = drawn["real"] * 2 - 1, drawn["latents"]
        ones, zeros = torch.ones(real.shape[0]), torch.zeros(real.shape[0])
        optimizer_d.zero_grad()
        fake = generator(latents)
        loss_d = bce(torch.sigmoid(discriminator(real)), ones) + bce(torch.sigmoid(discriminator(fake.detach())), zeros)
        loss_d.backward()
        optimizer_d.step()
        optimizer_g.zero_grad()
        loss_g = bce(torch.sigmoid(discriminator(fake)), ones)
        loss_g.backward()
        optimizer_g.step()
        assert float(figures["losses/discriminator"]) == pytest.approx(loss_d.item(), rel=1e-5)
        assert float(figures["losses/generator"]) == pytest.approx(loss_g.item(), rel=1e-5)
    for ours, plain in ((task.generator, generator), (task.discriminator, discriminator)):
        for (name, value), expected in zip(ours.state_dict().items(), plain.state_dict().values()):
            # Adam moves a parameter by about lr (2e-4) a step, whatever its gradient's size: a parameter whose
            # gradient is near rounding may differ by a fraction of that; the running statistics must agree.
            tolerance = 1e-4 if name.endswith(("weight", "bias")) else 1e-6
            assert torch.allclose(value.float(), expected.float(), rtol=0, atol=tolerance), name


def test_bad_gan_settings_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["run", GAN_MNIST, f"run.root={tmp_path}", "model.loss=wgan"]) == 2
    assert "model.loss: unknown 'wgan'" in capsys.readouterr().err
    assert gan_task.GANTask.Config().model.loss == "dcgan"
