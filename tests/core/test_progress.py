"""Progress on a fake clock: the ETA restarts with each phase and follows the recent rate, evaluations and
checkpoints stay out of the rate and go into the ETA, countdowns speak only for long work; and in a real run,
perf/sps is not dragged down by the evaluations."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from supervised.classifier import ClassifierTask
from core.cli import main
from core.progress import Countdown, Progress
from core.tensorboard import event_files

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _last_line(caplog: pytest.LogCaptureFixture) -> str:
    return caplog.records[-1].getMessage()


def _run(progress: Progress, clock: FakeClock, start: int, stop: int, seconds_per_step: float) -> None:
    for step in range(start + 1, stop + 1):
        clock.now += seconds_per_step
        progress.update(step, {})


def test_eta_after_the_warm_up_follows_the_learning_rate_not_the_session_average(caplog) -> None:
    caplog.set_level(logging.INFO, logger="rlgen")
    clock = FakeClock()
    # 10,240 warm-up steps at 1,024 steps/s, then learning at 32 steps/s: 32x slower, as on Breakout.
    progress = Progress(100_000, 0, every_s=5.0, interactive=False,
                        phases={"warm-up": 10_240, "learning": 100_000}, clock=clock)
    _run(progress, clock, 0, 10_240, 1 / 1024)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["step 5120/100000 (5.1%) phase=warm-up sps=1024 eta=? (warm-up ends in 0:00:05)",
                     "step 10240/100000 (10.2%) phase=learning sps=? eta=?"]  # no learning step measured yet
    _run(progress, clock, 10_240, 10_880, 1 / 32)  # 20 s of learning
    # 89,120 steps left at 32 steps/s: 2,785 s. The session average (10,880 steps in 30 s) would say 4 minutes.
    assert _last_line(caplog) == "step 10880/100000 (10.9%) phase=learning sps=32 eta=0:46:25"


def test_sps_is_the_recent_rate_and_pauses_are_in_the_eta_not_the_rate(caplog) -> None:
    caplog.set_level(logging.INFO, logger="rlgen")
    clock = FakeClock()
    progress = Progress(10_000, 0, every_s=0.0, interactive=False,
                        cadences={"evaluation": 1_000, "checkpoint": 5_000}, clock=clock)
    started = progress.stepping_seconds()
    _run(progress, clock, 0, 2_000, 1 / 8)  # 250 s at 8 steps/s
    with progress.pause("evaluation"):
        clock.now += 100.0
    with progress.pause("checkpoint"):
        clock.now += 20.0
    _run(progress, clock, 2_000, 2_400, 1 / 2)  # then 200 s at 2 steps/s
    # The last 120 s of stepping, not the session's 2,400 steps in 570 s; the ETA is 7,600 steps at 2 steps/s
    # plus 8 evaluations (3,000 ... 10,000) of 100 s and 2 checkpoints (5,000, 10,000) of 20 s.
    assert _last_line(caplog) == "step 2400/10000 (24.0%) sps=2 eta=1:17:20 (evaluations+checkpoints 0:14:00 of it)"
    assert progress.stepping_seconds() - started == 450.0


def test_a_long_countdown_logs_done_total_rate_and_eta_and_its_duration(caplog) -> None:
    caplog.set_level(logging.INFO, logger="rlgen")
    clock = FakeClock()
    with Countdown(100, "IWAE bound", "images", every_s=10.0, interactive=False, clock=clock) as shown:
        for _ in range(100):
            clock.now += 0.5
            shown.advance()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 5  # at 10, 20, 30 and 40 s, and the end
    assert lines[1] == "IWAE bound: 40/100 images (40.0%) 2 images/s eta=0:00:30"
    assert lines[-1] == "IWAE bound: 100/100 images in 0:00:50"


def test_a_short_countdown_says_nothing(caplog) -> None:
    caplog.set_level(logging.INFO, logger="rlgen")
    clock = FakeClock()
    with Countdown(100, "AIS", "temperatures", every_s=10.0, interactive=False, clock=clock) as shown:
        for _ in range(100):
            clock.now += 0.09
            shown.advance()
    assert caplog.records == []


def _sps_points(run_dir: Path) -> dict[int, float]:
    points = {}
    for path in event_files(run_dir):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "perf/sps":
                    points[event.step] = value.tensor.float_val[0]
    return points


def test_perf_sps_leaves_evaluations_out(tmp_path: Path, monkeypatch) -> None:
    original = ClassifierTask.evaluate

    def slow_evaluate(self, final: bool = False):
        time.sleep(0.25)
        return original(self, final)

    monkeypatch.setattr(ClassifierTask, "evaluate", slow_evaluate)
    overrides = ["train.steps=400", "run.log_every=20", "run.eval_every=100", "run.checkpoint_every=1000"]
    assert main(["run", str(ROOT / "experiments" / "xor_mlp.yaml"), f"run.root={tmp_path}", *overrides]) == 0
    [run_dir] = (tmp_path / "xor_mlp").iterdir()
    points = _sps_points(run_dir)
    after_evaluations = sorted(points[step] for step in (120, 220, 320))
    others = sorted(points[step] for step in points if step % 100 != 20)
    # A window with a 0.25 s evaluation in it would run at a small fraction of the others' 20 steps / ~20 ms.
    assert after_evaluations[1] > 0.3 * others[len(others) // 2], (after_evaluations, others)
