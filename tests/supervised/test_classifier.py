"""The classifier task's extras: the AND and OR truth tables, and the steps and training seconds to a target
test accuracy, which agree with the evaluation curve and survive a resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.classification import DATASETS, ClassifierDataConfig
from core.cli import main
from core.config import build_config, parse_yaml
from core.optim import build_optimizer
from core.sweep import plan_sweep
from core.task import schema_for

ROOT = Path(__file__).resolve().parents[2]
XOR = str(ROOT / "experiments" / "xor_mlp.yaml")
OVERRIDES = ("train.steps=400", "run.eval_every=5", "run.log_every=5", "train.target_accuracy=1.0")


@pytest.mark.parametrize("name, outputs", [("and", [0, 0, 0, 1]), ("or", [0, 1, 1, 1]), ("xor", [0, 1, 1, 0])])
def test_truth_tables(name: str, outputs: list[int]) -> None:
    data = DATASETS.get(name)(ClassifierDataConfig(name=name), torch.device("cpu"))
    for (a, b), label in zip(data.train_inputs.tolist(), data.train_labels.tolist()):
        expected = {"and": a and b, "or": a or b, "xor": a != b}[name]
        assert label == int(expected)
    assert data.train_labels.tolist() == outputs and data.num_classes == 2


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_steps_to_target_is_the_first_evaluation_at_or_above_it(tmp_path: Path) -> None:
    assert main(["run", XOR, f"run.root={tmp_path}", *OVERRIDES]) == 0
    [run_dir] = (tmp_path / "xor_mlp").iterdir()
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    first = next(event.step for event in events.Scalars("eval/accuracy") if event.value >= 1.0)
    assert 5 < first < 400  # reached during the run, not at its first evaluation: a real crossing
    summary = _summary(run_dir)
    assert summary["eval/steps_to_target"] == first
    assert 0 < summary["eval/seconds_to_target"] < summary["perf/wall_time_s"]
    # Logged from the crossing on, the same value at every later evaluation.
    assert {event.value for event in events.Scalars("eval/steps_to_target")} == {first}
    assert events.Scalars("eval/steps_to_target")[0].step == first


def test_the_target_survives_a_resume_and_is_absent_until_reached(tmp_path: Path) -> None:
    assert main(["run", XOR, f"run.root={tmp_path / 'straight'}", *OVERRIDES]) == 0
    [straight] = (tmp_path / "straight" / "xor_mlp").iterdir()
    reached = _summary(straight)["eval/steps_to_target"]
    early = [override for override in OVERRIDES if not override.startswith("train.steps")]
    assert main(["run", XOR, f"run.root={tmp_path / 'short'}", f"train.steps={int(reached) + 5}", *early]) == 0
    [short] = (tmp_path / "short" / "xor_mlp").iterdir()
    assert main(["resume", str(short), "train.steps=400"]) == 0
    assert _summary(short)["eval/steps_to_target"] == reached
    # A learning rate too small to move the initial weights keeps the accuracy where it starts, below 1.
    assert main(["run", XOR, f"run.root={tmp_path / 'never'}", "train.steps=20", "optim.lr=1e-9",
                 "train.target_accuracy=1.0"]) == 0
    [never] = (tmp_path / "never" / "xor_mlp").iterdir()
    assert _summary(never)["eval/accuracy"] < 1 and "eval/steps_to_target" not in _summary(never)


def test_a_target_outside_the_unit_interval_is_one_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["run", XOR, f"run.root={tmp_path}", "train.target_accuracy=98"]) == 2
    assert "train.target_accuracy must lie in (0, 1]" in capsys.readouterr().err



def test_the_optimizers_sweep_trains_each_optimizer_exactly_as_written(tmp_path: Path) -> None:
    """Each sweep.grid value replaces the whole optim section: plain SGD must not inherit another value's momentum."""
    plan = plan_sweep(ROOT / "experiments" / "optimizers_mnist.yaml", [f"run.root={tmp_path}"], [])
    built = {}
    for trial in plan.trials:
        config = build_config(parse_yaml(trial.config_yaml, trial.name), [], trial.name, schema_for)
        optimizer = build_optimizer(config.optim, [torch.nn.Parameter(torch.zeros(1))])
        group = optimizer.param_groups[0]
        built[type(optimizer).__name__, group.get("nesterov", False)] = (group["lr"], group.get("momentum"))
    assert built == {("SGD", False): (0.1, 0), ("SGD", True): (0.01, 0.9), ("RMSprop", False): (1e-3, 0),
                     ("Adam", False): (1e-3, None)}
    assert plan.metric == "eval/accuracy" and plan.mode == "max"
