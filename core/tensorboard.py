"""TensorBoard output of a run: tagged scalars, images, hyperparameters, and trimming for resume.

All tags belong to one of the families in `TAG_FAMILIES`, so every run reads the same way in the UI.
"""
from __future__ import annotations

import os
from pathlib import Path
import typing
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.record_writer import RecordWriter
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

TAG_FAMILIES = ("charts/", "losses/", "eval/", "perf/", "samples/")

_TRIM_TEMP = ".trim-in-progress"


def check_tag(tag: str) -> str:
    """Return `tag`, or raise ValueError when it is outside the run's tag families."""
    if not tag.startswith(TAG_FAMILIES):
        raise ValueError(f"TensorBoard tag {tag!r} must start with one of {', '.join(TAG_FAMILIES)}")
    return tag


class TensorBoardLog:
    """A SummaryWriter opened on first use, with the tag families enforced."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._writer: Optional[SummaryWriter] = None

    @property
    def writer(self) -> SummaryWriter:
        if self._writer is None:
            self._writer = SummaryWriter(log_dir=str(self.directory), flush_secs=30)
        return self._writer

    def scalar(self, tag: str, value: float | torch.Tensor, step: int) -> None:
        """One point of a curve; a tensor is read off the device here, at log time only."""
        self.writer.add_scalar(check_tag(tag), float(value), step)

    def scalars(self, values: Mapping[str, float | torch.Tensor], step: int) -> None:
        for tag, value in values.items():
            self.scalar(tag, value, step)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """A (C, H, W) image with values in [0, 1]."""
        self.writer.add_image(check_tag(tag), image.detach().float().clamp(0, 1).cpu(), step)

    def histogram(self, tag: str, values: torch.Tensor, step: int, bins: str | int | Sequence[float] = "auto") -> None:
        self.writer.add_histogram(check_tag(tag), values.detach().float().cpu(), step, bins=bins)

    def video(self, tag: str, frames: torch.Tensor, step: int, fps: int = 15) -> None:
        """(N, T, C, H, W) uint8 or float frames, C = 1 (grey) or 3; needs the `video` extra (moviepy)."""
        if frames.shape[2] == 1:  # the GIF writer under add_video (Pillow) refuses one-channel frames
            frames = frames.expand(-1, -1, 3, -1, -1)
        self.writer.add_video(check_tag(tag), frames.cpu(), step, fps=fps)

    def hparams_start(self, hparams: Mapping[str, Any], metric_tags: list[str]) -> None:
        """Record the hyperparameters in this same run (not a sub-run), with the metrics to show beside them.

        The HPARAMS tab reads each metric's value from this run's scalars of the same tag.
        """
        experiment, session_start, _ = hparams_summaries(dict(hparams), {tag: 0.0 for tag in metric_tags})
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(session_start)

    def hparams_end(self) -> None:
        """Mark the session finished in the HPARAMS tab."""
        _, _, session_end = hparams_summaries({"_": 0}, {})
        self.writer.file_writer.add_summary(session_end)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _Discard:
    """Accepts any call or attribute and does nothing: the writer of a process that must not write."""

    def __getattr__(self, name: str) -> "_Discard":
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> "_Discard":
        return self


class SilentLog(TensorBoardLog):
    """The log of a data-parallel rank other than 0: same calls, no event file (rank 0 writes the run's)."""

    @property
    def writer(self) -> SummaryWriter:
        return typing.cast(SummaryWriter, _Discard())


def _created_at(path: Path) -> tuple[float, str]:
    """When the event file was opened, from the wall time of its first event: file names sort wrongly when two
    writers open in the same second (their counter suffix compares as text, so "9" after "10")."""
    for record in RawEventFileLoader(str(path)).Load():
        return event_pb2.Event.FromString(record).wall_time, path.name
    return float("inf"), path.name


def event_files(directory: Path) -> list[Path]:
    """The run's TensorBoard event files (not those of sub-folders), oldest first."""
    return sorted((p for p in directory.glob("events.out.tfevents.*") if p.is_file()), key=_created_at)


def _rewrite_without(path: Path, drop: Callable[[event_pb2.Event], bool]) -> int:
    """Rewrite one event file without the summaries `drop` selects, through a temporary file (that
    TensorBoard ignores) renamed over it. Returns the number of events removed."""
    kept: list[bytes] = []
    dropped = 0
    for record in RawEventFileLoader(str(path)).Load():
        event = event_pb2.Event.FromString(record)
        if event.HasField("summary") and drop(event):
            dropped += 1
        else:
            kept.append(record)
    if dropped:
        temp = path.with_name(_TRIM_TEMP)
        with open(temp, "wb") as stream:
            writer = RecordWriter(stream)
            for record in kept:
                writer.write(record)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    return dropped


def trim_events_after(directory: Path, last_step: int) -> int:
    """Drop every summary logged at a step after `last_step`, so a resumed run logs each step once.

    A run killed after its last checkpoint has logged steps the resumed run will log again; they
    are removed here. Returns the number of events removed.
    """
    return sum(_rewrite_without(path, lambda event: event.step > last_step) for path in event_files(directory))


def summary_keys(path: Path) -> set[tuple[str, int]]:
    """The (tag, step) of every summary value in one event file."""
    keys = set()
    for record in RawEventFileLoader(str(path)).Load():
        event = event_pb2.Event.FromString(record)
        if event.HasField("summary"):
            keys.update((value.tag, event.step) for value in event.summary.value)
    return keys


def replace_older_events(directory: Path, newer: Sequence[Path]) -> int:
    """Drop from the run's other event files each summary whose tag and step one of `newer` files also holds:
    a repeated evaluation of a checkpoint replaces the figures and images of the previous one instead of
    adding a second point at the same step. Returns the number of events removed."""
    keys = set().union(*(summary_keys(path) for path in newer)) if newer else set()
    if not keys:
        return 0
    older = [path for path in event_files(directory) if path not in set(newer)]
    return sum(_rewrite_without(path, lambda event: all((value.tag, event.step) in keys
                                                         for value in event.summary.value))
               for path in older)
