"""The whole pipeline on XOR: run folder, TensorBoard, summary, and resume after SIGINT or SIGKILL ending
with exactly the parameters of an uninterrupted run, each logged step once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from supervised.classifier import ClassifierTask
from core.cli import main
from core.config import load_config
from core.invocation import rlgen_command
from core.task import schema_for
from core.tensorboard import event_files

ROOT = Path(__file__).resolve().parents[2]
XOR = ROOT / "experiments" / "xor_mlp.yaml"


def _run_dirs(root: Path) -> list[Path]:
    return sorted((root / "xor_mlp").iterdir()) if (root / "xor_mlp").is_dir() else []


def _steps_by_tag(run_dir: Path) -> dict[str, list[int]]:
    steps: dict[str, list[int]] = {}
    for path in event_files(run_dir):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if not value.tag.startswith("_hparams_"):
                    steps.setdefault(value.tag, []).append(event.step)
    return {tag: sorted(found) for tag, found in steps.items()}


def _values(run_dir: Path, tag: str) -> dict[int, float]:
    """step -> the value logged under `tag`, later event files winning."""
    return {event.step: float(value.tensor.float_val[0]) if value.HasField("tensor") else value.simple_value
            for path in event_files(run_dir) for event in EventFileLoader(str(path)).Load()
            for value in event.summary.value if value.tag == tag}


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    newest = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]
    return torch.load(newest, weights_only=True)["task"]["model"]


def test_xor_run_end_to_end(tmp_path: Path) -> None:
    assert main(["run", str(XOR), f"run.root={tmp_path}"]) == 0
    [run_dir] = _run_dirs(tmp_path)
    assert len(run_dir.name) == len("20261126-175300") and run_dir.name[8] == "-"
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "checkpoints", "log.txt", "summary.json"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval/accuracy"] == 1.0
    assert summary["eval/loss"] < 0.05
    assert set(summary) >= {"losses/cross_entropy", "charts/grad_norm", "perf/wall_time_s"}
    steps = _steps_by_tag(run_dir)
    assert steps["losses/cross_entropy"] == list(range(10, 1001, 10))
    assert steps["perf/sps"] == list(range(10, 1001, 10))
    walls = _values(run_dir, "perf/wall_time_s")
    assert sorted(walls) == list(range(10, 1001, 10))
    assert 0 < walls[10] and all(walls[a] <= walls[b] for a, b in zip(sorted(walls), sorted(walls)[1:]))
    assert walls[1000] <= summary["perf/wall_time_s"]
    assert steps["eval/accuracy"] == list(range(100, 1001, 100))
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] != []
    assert len(list((run_dir / "checkpoints").glob("step-*.pt"))) == 3  # keep_checkpoints
    # The saved config is a complete experiment file: loading it gives the same config, with `precision: auto`
    # and `channels_last: null` resolved for this CPU (the classifier never picks bf16 by itself).
    original = load_config(XOR, [f"run.root={tmp_path}"], schema_for)
    assert (original.precision, original.channels_last) == ("auto", None)
    original.precision, original.channels_last = "fp32", True
    assert load_config(run_dir / "config.yaml", [], schema_for) == original


def _interrupting_train_step(stop_at: int, signum: int):
    original = ClassifierTask.train_step

    def train_step(self):
        figures = original(self)
        if self.step == stop_at:
            os.kill(os.getpid(), signum)
        return figures

    return train_step


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_and_resume_equals_uninterrupted(tmp_path: Path, monkeypatch, capsys, signum: int) -> None:
    overrides = ["train.batch_size=2", "train.steps=600", "run.checkpoint_every=200", "run.log_every=7"]
    assert main(["run", str(XOR), f"run.root={tmp_path / 'straight'}", *overrides]) == 0
    [straight] = _run_dirs(tmp_path / "straight")

    monkeypatch.setattr(ClassifierTask, "train_step", _interrupting_train_step(333, signum))
    assert main(["run", str(XOR), f"run.root={tmp_path / 'stopped'}", *overrides]) == 0
    [stopped] = _run_dirs(tmp_path / "stopped")
    assert f"Resume with: {rlgen_command()} resume {stopped}" in capsys.readouterr().err
    assert (stopped / "checkpoints" / "step-000000000333.pt").is_file()
    assert not (stopped / "summary.json").exists()
    monkeypatch.undo()

    assert main(["resume", str(stopped)]) == 0
    resumed, reference = _final_weights(stopped), _final_weights(straight)
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    assert _steps_by_tag(stopped) == _steps_by_tag(straight)
    # The wall time goes on from the checkpoint's across the resume, and ends at the summary's.
    walls = _values(stopped, "perf/wall_time_s")
    assert all(walls[a] <= walls[b] for a, b in zip(sorted(walls), sorted(walls)[1:]))
    assert walls[600] <= json.loads((stopped / "summary.json").read_text())["perf/wall_time_s"]
    loss_steps = _steps_by_tag(stopped)["losses/cross_entropy"]
    assert len(loss_steps) == len(set(loss_steps))


def _wait_for_checkpoint(run_root: Path, process: subprocess.Popen, timeout: float = 180.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run_dir in _run_dirs(run_root):
            if list((run_dir / "checkpoints").glob("step-*.pt")):
                return run_dir
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared")


def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    overrides = ["train.batch_size=2", "train.steps=8000", "run.checkpoint_every=1000", "run.log_every=5",
                 "run.eval_every=1000"]
    process = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "run", str(XOR), f"run.root={tmp_path / 'killed'}", *overrides],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    run_dir = _wait_for_checkpoint(tmp_path / "killed", process)
    time.sleep(0.3)
    process.kill()
    process.wait()
    assert not (run_dir / "summary.json").exists(), "killed too late: the run had finished"

    result = subprocess.run([sys.executable, "-m", "core.cli", "resume", str(run_dir)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resumed from step-" in result.stderr

    assert main(["run", str(XOR), f"run.root={tmp_path / 'straight'}", *overrides]) == 0
    [straight] = _run_dirs(tmp_path / "straight")
    resumed, reference = _final_weights(run_dir), _final_weights(straight)
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    assert _steps_by_tag(run_dir) == _steps_by_tag(straight)


def test_a_finished_run_resumed_longer_ends_as_a_run_started_longer(tmp_path: Path, capsys) -> None:
    overrides = ["train.batch_size=2", "run.checkpoint_every=100", "run.log_every=10"]
    assert main(["run", str(XOR), f"run.root={tmp_path / 'straight'}", "train.steps=600", *overrides]) == 0
    [straight] = _run_dirs(tmp_path / "straight")
    assert main(["run", str(XOR), f"run.root={tmp_path / 'short'}", "train.steps=300", *overrides]) == 0
    [extended] = _run_dirs(tmp_path / "short")

    assert main(["resume", str(extended), "train.steps=600", "run.eval_every=100"]) == 0
    resumed, reference = _final_weights(extended), _final_weights(straight)
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    assert _steps_by_tag(extended) == _steps_by_tag(straight)
    assert load_config(extended / "config.yaml", [], schema_for).train.steps == 600
    assert "resumed with train.steps: 300 -> 600" in (extended / "log.txt").read_text()


@pytest.mark.parametrize("override", ["optim.lr=0.5", "run.root=/elsewhere", "model.hidden=[3]", "train.steps=-5"])
def test_resume_refuses_to_change_what_is_trained(tmp_path: Path, capsys, override: str) -> None:
    assert main(["run", str(XOR), f"run.root={tmp_path}", "train.steps=20"]) == 0
    [run_dir] = _run_dirs(tmp_path)
    saved = (run_dir / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["resume", str(run_dir), override]) == 2
    error = capsys.readouterr().err
    assert ("train.steps" in error or override.partition("=")[0] in error) and "Traceback" not in error
    assert (run_dir / "config.yaml").read_text() == saved


def _diverging_train_step(from_step: int):
    original = ClassifierTask.train_step

    def train_step(self):
        figures = original(self)
        if self.step >= from_step:
            figures["losses/cross_entropy"] = figures["losses/cross_entropy"] * float("nan")
        return figures

    return train_step


@pytest.mark.parametrize("from_step, log_every", [(57, 10), (57, 1000)])
def test_a_nan_loss_stops_the_run_keeping_the_last_good_checkpoint(tmp_path: Path, monkeypatch, capsys,
                                                                   from_step: int, log_every: int) -> None:
    """Caught at the next log point, or, with log points rarer than checkpoints, before the checkpoint."""
    monkeypatch.setattr(ClassifierTask, "train_step", _diverging_train_step(from_step))
    code = main(["run", str(XOR), f"run.root={tmp_path}", "train.steps=200", "run.checkpoint_every=20",
                 f"run.log_every={log_every}", "run.eval_every=1000"])
    assert code == 2
    [run_dir] = _run_dirs(tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rlgen: error: training diverged by step") and "losses/cross_entropy = nan" in err[-1]
    assert "step-000000000040.pt, is kept" in err[-1]
    assert sorted(path.name for path in (run_dir / "checkpoints").glob("step-*.pt"))[-1] == "step-000000000040.pt"
    assert not (run_dir / "summary.json").exists()
    logged = _steps_by_tag(run_dir).get("losses/cross_entropy", [])
    assert all(step < from_step for step in logged)


def test_a_checkpoint_of_another_model_or_task_is_one_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["run", str(XOR), f"run.root={tmp_path / 'a'}", "train.steps=20"]) == 0
    assert main(["run", str(XOR), f"run.root={tmp_path / 'b'}", "train.steps=20", "model.hidden=[3, 3]"]) == 0
    [first], [second] = _run_dirs(tmp_path / "a"), _run_dirs(tmp_path / "b")
    foreign = next((second / "checkpoints").glob("step-*.pt"))
    for path in (first / "checkpoints").glob("step-*.pt"):
        path.write_bytes(foreign.read_bytes())
    capsys.readouterr()
    for command in (["resume", str(first), "train.steps=40"], ["eval", str(first)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(first) in err[0] and "does not fit the run's task 'classifier'" in err[0], err
        assert load_config(first / "config.yaml", [], schema_for).train.steps == 20  # the refused resume left it
    # A checkpoint whose task state lacks what this task saves (another task's) names the missing part.
    state = torch.load(foreign, weights_only=True)
    state["task"] = {"network": state["task"].get("model", {})}
    for path in (first / "checkpoints").glob("step-*.pt"):
        torch.save(state, path)
    assert main(["eval", str(first)]) == 2
    assert "it has no" in capsys.readouterr().err
