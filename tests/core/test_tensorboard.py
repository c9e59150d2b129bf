"""TensorBoard output: tag families, hyperparameters in the same run, trimming events past a checkpoint."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from core.tensorboard import TensorBoardLog, event_files, trim_events_after


def _steps(directory: Path, tag: str) -> list[int]:
    accumulator = EventAccumulator(str(directory))
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


def _raw_steps(directory: Path, tag: str) -> list[int]:
    steps = []
    for path in event_files(directory):
        for event in EventFileLoader(str(path)).Load():
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return steps


def test_tags_outside_the_families_are_rejected(tmp_path: Path) -> None:
    log = TensorBoardLog(tmp_path)
    with pytest.raises(ValueError, match="must start with one of charts/, losses/"):
        log.scalar("loss", 1.0, 0)
    log.scalar("losses/td", torch.tensor(2.0), 0)
    log.close()
    assert _steps(tmp_path, "losses/td") == [0]


def test_trim_drops_only_events_after_the_step(tmp_path: Path) -> None:
    log = TensorBoardLog(tmp_path)
    for step in range(0, 21):
        log.scalar("losses/a", step, step)
    log.image("samples/grid", torch.rand(1, 8, 8), 15)
    log.close()
    log = TensorBoardLog(tmp_path)  # a second file, as a resumed run would write
    for step in range(5, 25):
        log.scalar("losses/b", step, step)
    log.close()
    removed = trim_events_after(tmp_path, 10)
    assert removed == 10 + 1 + 14
    assert _raw_steps(tmp_path, "losses/a") == list(range(0, 11))
    assert _raw_steps(tmp_path, "losses/b") == list(range(5, 11))
    assert len(event_files(tmp_path)) == 2
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith("events.out.tfevents")]
    assert trim_events_after(tmp_path, 10) == 0


def test_event_files_come_in_the_order_they_were_opened(tmp_path: Path) -> None:
    # Two writers of one process opened in the same second: their counters 9 and 10 sort the wrong way as text.
    for counter, wall_time in ((9, 1000.25), (10, 1000.75)):
        with open(tmp_path / f"events.out.tfevents.1000.host.7.{counter}", "wb") as stream:
            RecordWriter(stream).write(event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2")
                                       .SerializeToString())
    assert [path.name[-2:] for path in event_files(tmp_path)] == [".9", "10"]


def test_trim_with_no_checkpoint_removes_every_summary(tmp_path: Path) -> None:
    log = TensorBoardLog(tmp_path)
    log.scalar("losses/a", 1.0, 0)
    log.close()
    trim_events_after(tmp_path, -1)
    assert _raw_steps(tmp_path, "losses/a") == []


def test_hparams_live_in_the_same_run(tmp_path: Path) -> None:
    log = TensorBoardLog(tmp_path)
    log.hparams_start({"optim.lr": 0.001, "model.hidden": "[8]", "seed": 1}, ["eval/accuracy"])
    log.scalar("eval/accuracy", 1.0, 100)
    log.hparams_end()
    log.close()
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []  # no sub-run folder
    plugins = set()
    for path in event_files(tmp_path):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                plugins.add((value.tag, value.metadata.plugin_data.plugin_name))
    assert {("_hparams_/experiment", "hparams"), ("_hparams_/session_start_info", "hparams"),
            ("_hparams_/session_end_info", "hparams")} <= plugins


def test_grey_frames_are_written_as_a_video(tmp_path: Path) -> None:
    pytest.importorskip("moviepy", reason="the video extra (moviepy) is not installed")
    log = TensorBoardLog(tmp_path)
    frames = torch.randint(0, 256, (1, 6, 1, 84, 84), dtype=torch.uint8)
    log.video("samples/gameplay", frames, 3, fps=15)
    log.close()
    accumulator = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    accumulator.Reload()
    [video] = accumulator.Images("samples/gameplay")
    assert video.step == 3 and (video.width, video.height) == (84, 84)
    assert video.encoded_image_string.startswith(b"GIF")
