"""Video files of frames: streamed to ffmpeg through moviepy (the `video` extra), renamed into place when whole."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import TracebackType
from typing import Any, Optional

import numpy as np

from core.errors import UserError

CODECS = {".mp4": "libx264", ".webm": "libvpx"}  # the containers every browser and player opens


def check_video_path(path: Path, needed_by: str) -> None:
    """UserErrors for a file type without a codec here or a missing `video` extra, before any work is done."""
    if path.suffix.lower() not in CODECS:
        raise UserError(f"{path}: a video ends in {' or '.join(CODECS)}")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the video's file name")
    if importlib.util.find_spec("moviepy") is None:
        raise UserError(f"{needed_by} needs the video extra (moviepy): pip install 'rlgen[video]'")


class VideoWriter:
    """Writes (H, W, 3) uint8 frames to `path` at `fps`, one after another, so a long game never sits in memory.

    ffmpeg writes to a hidden file beside `path`; leaving the `with` block renames it over `path`, or, on an
    error or interrupt, removes it, so `path` is either the whole video or untouched.
    """

    def __init__(self, path: Path, fps: float) -> None:
        check_video_path(path, "writing a video")
        if not fps > 0:
            raise UserError(f"a video's frame rate must be positive, got {fps}")
        self.path = path
        self.fps = fps
        self.codec = CODECS[path.suffix.lower()]
        # Same suffix as `path`: ffmpeg picks the container from it.
        self.temp = path.with_name(f".{path.stem}.partial{path.suffix}")
        self.frames = 0
        self.size: Optional[tuple[int, int]] = None  # (width, height) of the first frame
        self._writer: Any = None

    def __enter__(self) -> "VideoWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def add(self, frame: np.ndarray) -> None:
        """Append one frame; every frame has the first one's size."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"a video frame is (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        size = (frame.shape[1], frame.shape[0])
        if self._writer is None:
            from moviepy.video.io.ffmpeg_writer import FFMPEG_VideoWriter

            self.size = size
            self._writer = FFMPEG_VideoWriter(str(self.temp), size, self.fps, codec=self.codec)
        elif size != self.size:
            raise ValueError(f"video frames change size from {self.size} to {size}")
        self._writer.write_frame(np.ascontiguousarray(frame))
        self.frames += 1

    def __exit__(self, kind: Optional[type[BaseException]], error: Optional[BaseException],
                 trace: Optional[TracebackType]) -> None:
        try:
            if self._finish() and kind is None:
                os.replace(self.temp, self.path)
                return
        finally:
            self.temp.unlink(missing_ok=True)
        if kind is None:
            raise RuntimeError(f"ffmpeg failed to write {self.path}" if self.frames else f"{self.path}: no frames")

    def _finish(self) -> bool:
        """Close ffmpeg's input and wait for it; True when it wrote the file."""
        if self._writer is None:
            return False
        process = self._writer.proc
        self._writer.close()
        return process.returncode == 0 and self.temp.is_file()
