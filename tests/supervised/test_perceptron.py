"""The perceptron task: Rosenblatt's rule against a naive loop, Novikoff's mistake bound on separable data, AND
and OR learned exactly end to end, XOR never above 3 of 4 and said so, and resume through the driver."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.checkpoint import load_file
from core.cli import main
from supervised.perceptron import Perceptron, augment

ROOT = Path(__file__).resolve().parents[2]
AND = str(ROOT / "experiments" / "perceptron_and.yaml")
XOR = str(ROOT / "experiments" / "perceptron_xor.yaml")


def _naive_epoch(weights: list[float], inputs: list[list[float]], targets: list[float], lr: float) -> int:
    """Rosenblatt's rule as written in the textbooks, one sample at a time in plain Python."""
    mistakes = 0
    for x, y in zip(inputs, targets):
        if y * sum(w * xi for w, xi in zip(weights, x)) <= 0:
            for i, xi in enumerate(x):
                weights[i] += lr * y * xi
            mistakes += 1
    return mistakes


def test_the_update_rule_equals_a_naive_loop() -> None:
    # Small integers keep every sum exact, so the two must agree to the bit; the labels are random, so the data are
    # not separable and the rule keeps updating for all the epochs compared.
    generator = torch.Generator().manual_seed(3)
    inputs = augment(torch.randint(-3, 4, (40, 3), generator=generator).double())
    targets = torch.randint(0, 2, (40,), generator=generator).double() * 2 - 1
    start = torch.randint(-2, 3, (4,), generator=generator).double()
    perceptron, reference = Perceptron(start.clone()), start.tolist()
    for epoch in range(6):
        order = torch.randperm(40, generator=generator)
        mistakes = perceptron.epoch(inputs[order], targets[order], lr=2.0)
        assert int(mistakes) == _naive_epoch(reference, inputs[order].tolist(), targets[order].tolist(), 2.0) > 0
        assert perceptron.weights.tolist() == reference, epoch


@pytest.mark.parametrize("seed, lr", [(0, 1.0), (1, 1.0), (2, 0.1)])
def test_mistakes_on_separable_data_stay_within_novikoffs_bound(seed: int, lr: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    separator = torch.randn(6, generator=generator, dtype=torch.float64)  # 5 weights and a bias
    inputs = augment(torch.rand(2000, 5, generator=generator, dtype=torch.float64) * 2 - 1)
    distances = inputs @ separator / separator.norm()
    keep = distances.abs() > 0.05  # a margin by construction
    inputs, targets = inputs[keep], torch.sign(distances[keep])
    radius = float(inputs.norm(dim=1).max())
    margin = float((targets * (inputs @ separator)).min() / separator.norm())
    bound = (radius / margin) ** 2
    perceptron = Perceptron(torch.zeros(6, dtype=torch.float64))
    total = 0
    for _ in range(10_000):
        mistakes = int(perceptron.epoch(inputs, targets, lr))
        total += mistakes
        if mistakes == 0:
            break
    assert mistakes == 0, "did not converge"
    assert 0 < total <= bound, (total, bound)
    assert bool(perceptron.correct(inputs, targets).all())


def _run(tmp_path: Path, experiment: str, *overrides: str) -> Path:
    assert main(["run", experiment, f"run.root={tmp_path}", *overrides]) == 0
    [run_dir] = [path for folder in tmp_path.iterdir() for path in folder.iterdir()]
    return run_dir


def _events(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


@pytest.mark.parametrize("gate", ["and", "or"])
def test_and_and_or_are_learned_exactly_end_to_end(tmp_path: Path, capsys, gate: str) -> None:
    run_dir = _run(tmp_path, AND, f"data.name={gate}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval/accuracy"] == 1.0 and summary["eval/converged"] == 1.0 and summary["eval/errors"] == 0
    epochs = int(summary["eval/epochs"])
    assert epochs < 100  # stopped after the first epoch without a mistake, not at the cap
    events = _events(run_dir)
    errors = [event.value for event in events.Scalars("losses/errors")]
    assert len(errors) == epochs and errors[-1] == 0 and all(value > 0 for value in errors[:-1])
    assert sum(errors) == summary["eval/mistakes"]
    assert [event.step for event in events.Images("samples/decision_line")] == [*range(1, epochs + 1), 100]
    assert f"the perceptron learned {gate} exactly" in capsys.readouterr().err


def test_xor_never_gets_four_right_and_the_run_says_why(tmp_path: Path, capsys) -> None:
    run_dir = _run(tmp_path, XOR, "train.epochs=1000", "run.eval_every=250", "run.checkpoint_every=1000")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval/converged"] == 0.0 and summary["eval/epochs"] == 1000
    assert summary["eval/best_train_accuracy"] <= 0.75 and summary["eval/accuracy"] <= 0.75
    accuracy = [event.value for event in _events(run_dir).Scalars("charts/accuracy")]
    assert len(accuracy) == 1000 and max(accuracy) <= 0.75
    err = capsys.readouterr().err
    assert "XOR is not linearly separable" in err and "experiments/xor_mlp.yaml" in err


def test_resumed_longer_ends_with_the_weights_of_a_longer_run(tmp_path: Path) -> None:
    straight = _run(tmp_path / "straight", XOR, "train.epochs=20")
    short = _run(tmp_path / "short", XOR, "train.epochs=10")
    assert main(["resume", str(short), "train.epochs=20"]) == 0
    resumed = load_file(short / "checkpoints" / "step-000000000020.pt")["task"]
    reference = load_file(straight / "checkpoints" / "step-000000000020.pt")["task"]
    assert torch.equal(resumed["weights"], reference["weights"])
    assert int(resumed["mistakes"]) == int(reference["mistakes"]) and resumed["epochs_run"] == 20


def test_a_converged_run_resumed_longer_ends_at_once(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, AND)
    before = json.loads((run_dir / "summary.json").read_text())
    assert main(["resume", str(run_dir), "train.epochs=200"]) == 0
    after = json.loads((run_dir / "summary.json").read_text())
    assert after["eval/epochs"] == before["eval/epochs"] and after["eval/mistakes"] == before["eval/mistakes"]
    assert (run_dir / "checkpoints" / "step-000000000200.pt").is_file()


@pytest.mark.parametrize("override", ["train.epochs=0", "train.lr=0", "train.init_std=-1", "precision=bf16"])
def test_bad_settings_exit_2_in_one_line(tmp_path: Path, capsys, override: str) -> None:
    assert main(["run", AND, f"run.root={tmp_path}", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlgen: error:") and override.partition("=")[0] in err[0], err

