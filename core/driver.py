"""The driver around every task: steps it, logs, evaluates, checkpoints, stops cleanly, writes the summary.

Order within a step N: the task steps, the figures of steps up to N are logged, an evaluation at N
runs if due, TensorBoard is flushed, then checkpoint N is written. So every event at a step <= N is on
disk before checkpoint N exists, and resuming from N drops only the events after N (the ones a killed
run logged past its last checkpoint) before logging them again.
"""
from __future__ import annotations

import logging
import shlex
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Optional

import torch

from core import distributed
from core.checkpoint import restore_checked
from core.config import flatten_config
from core.device import (
    flush_denormals,
    resolve_device,
    rng_state,
    seed_everything,
    set_deterministic,
    set_rng_state,
    set_threads,
)
from core.errors import UserError
from core.figures import FigureWindow
from core.invocation import rlgen_command
from core.progress import Progress, configure
from core.run import Run, write_json_atomic
from core.task import TASKS, Task
from core.tensorboard import event_files, replace_older_events, trim_events_after

log = logging.getLogger("rlgen")

CHECKPOINT_FORMAT = 1


class StopRequest:
    """While active, SIGINT/SIGTERM ask the run to stop after the current step; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is not threading.main_thread():
            return self  # Python lets only the main thread handle signals (a Ray Tune trial runs in another)
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.info("%s received: finishing the current step, then checkpointing", signal.Signals(signum).name)


def crossed(before: int, after: int, every: int) -> bool:
    """True when a multiple of `every` lies in (before, after]: cadences work for any step size."""
    return every > 0 and after // every > before // every


def build_task(run: Run) -> Task:
    """Seed everything, pick the device and construct the run's task."""
    config = run.config
    task_class = TASKS.get(config.task)
    check_data_parallel(config)
    device = distributed.initialise(config) or resolve_device(config.device)
    seed_everything(config.seed)
    set_deterministic(config.deterministic)
    set_threads(config.threads)
    flush_denormals()
    saved = (config.precision, config.channels_last)
    task = task_class(config, run, device)
    if (config.precision, config.channels_last) != saved and distributed.is_leader():
        run.save_config()  # `auto` and null resolved for this machine: the run replays with what it trained with
    return task


def start_run(config: Any) -> tuple[Run, Task]:
    """Make a new run folder (rank 0; the other data-parallel ranks learn where it is) and build its task;
    a task that cannot be built leaves no folder behind."""
    distributed.initialise(config)
    created = Run.create(config) if distributed.is_leader() else None
    directory = Path(distributed.broadcast_object(str(created.directory) if created else None))
    run = created or Run.follower(directory, config)
    try:
        task = build_task(run)
    except BaseException:
        if run.writes:
            run.discard()
        raise
    return run, task


def train_run(run: Run, task: Task, fresh: bool, driver: Optional["Driver"] = None) -> bool:
    """Train `task` in `run` to the end or a stop signal, then release both; True when the run is complete."""
    run.start_log_file()
    driver = driver or Driver(run, task)
    log.info("run %s (%s, task %s, device %s)", run.directory, run.config.name, run.config.task, task.device)
    finished = False
    try:
        complete = driver.train(fresh=fresh)
        finished = True
        return complete
    finally:
        task.close()
        run.close()
        distributed.shutdown(together=finished)


def check_data_parallel(config: Any) -> None:
    """Refuse distributed.nproc > 1 (or a torchrun launch) for a task that cannot split its batches."""
    distributed.check_config(config)
    several = config.distributed.nproc > 1 or distributed.under_torchrun()
    if several and not TASKS.get(config.task).data_parallel:
        supported = [name for name in TASKS.names() if TASKS.get(name).data_parallel]
        raise UserError(f"task {config.task!r} does not train data-parallel; tasks that do: {', '.join(supported)}")
    batch_size = getattr(getattr(config, "train", None), "batch_size", None)
    if several and batch_size and batch_size % config.distributed.nproc:
        raise UserError(f"train.batch_size ({batch_size}) must be a multiple of distributed.nproc "
                        f"({config.distributed.nproc}): it is the global batch the processes split")


def _short(tag: str) -> str:
    return tag.split("/", 1)[-1]


def load_task_state(task: Task, path: Path, state: dict[str, Any]) -> None:
    """Restore a checkpoint into `task`; one belonging to another task or model is a UserError naming both."""
    if state.get("format") != CHECKPOINT_FORMAT or not isinstance(state.get("task"), dict):
        raise UserError(f"{path}: not an rlgen checkpoint of format {CHECKPOINT_FORMAT}")
    restore_checked(path, task.config.task, lambda: task.load_state_dict(state["task"]))


class Driver:
    """Trains one task inside one run folder, fresh or resumed."""

    def __init__(self, run: Run, task: Task) -> None:
        self.run = run
        self.task = task
        self.last_train: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self.elapsed_s = 0.0
        self.saved_step = -1
        # Figures of the steps since the last log point, summed on the device; saved in checkpoints so a
        # resumed run logs exactly the points and averages an uninterrupted one does.
        self.window = FigureWindow()
        self.leader = distributed.is_leader()

    def restore(self) -> bool:
        """Load the newest good checkpoint, if any; drop TensorBoard events logged after it."""
        # Rank 0 reads the checkpoint and hands it to the other data-parallel ranks.
        loaded = distributed.broadcast_object(self.run.checkpoints.load_latest() if self.leader else None)
        if loaded is None:
            if self.leader:
                trim_events_after(self.run.directory, -1)
            return False
        path, state = loaded
        load_task_state(self.task, path, state)
        set_rng_state(state["rng"])
        driver = state["driver"]
        self.task.step = driver["step"]
        self.last_train = dict(driver["last_train"])
        self.last_eval = dict(driver["last_eval"])
        self.elapsed_s = driver["elapsed_s"]
        self.window = FigureWindow(driver.get("window_sums", {}), driver.get("window_counts", {}))
        self.saved_step = self.task.step
        removed = trim_events_after(self.run.directory, self.task.step) if self.leader else 0
        log.info("resumed from %s at step %d%s", path.name, self.task.step,
                 f" (dropped {removed} events logged after it)" if removed else "")
        return True

    def save(self) -> None:
        if not self.leader:
            self.saved_step = self.task.step
            return
        task_state = self.task.state_dict()  # where a task checks its own divergence first (the GAN)
        self._stop_if_diverged(self.window.sums)
        self.run.tb.flush()
        state = {
            "format": CHECKPOINT_FORMAT,
            "task": task_state,
            "rng": rng_state(),
            "driver": {
                "step": self.task.step,
                "last_train": self.last_train,
                "last_eval": self.last_eval,
                "elapsed_s": self.elapsed_s,
                "window_sums": self.window.sums,
                "window_counts": self.window.counts,
            },
        }
        start = time.perf_counter()
        path = self.run.checkpoints.save(self.task.step, state)
        self.saved_step = self.task.step
        log.info("checkpoint %s: %.2f GB in %.1f s", path.name, path.stat().st_size / 1e9, time.perf_counter() - start)

    def _stop_if_diverged(self, figures: dict[str, Any]) -> None:
        """Raise when a loss (its window sum or average) is NaN or infinite: training on would only spread it,
        and the checkpoint it would write would replace a good one."""
        losses = {tag: value for tag, value in figures.items() if tag.startswith("losses/")}
        if not losses:
            return
        values = torch.stack([torch.as_tensor(value, dtype=torch.float32).to("cpu") for value in losses.values()])
        finite = torch.isfinite(values)
        if bool(finite.all()):
            return
        bad = ", ".join(f"{tag} = {float(value):g}" for (tag, _), value, ok in zip(losses.items(), values, finite)
                        if not ok)
        saved = self.run.checkpoints.paths()
        kept = f"the last good checkpoint, {saved[-1].name}, is kept" if saved else "no checkpoint had been written"
        raise UserError(f"training diverged by step {self.task.step}: {bad}; stopped without checkpointing this "
                        f"state, and {kept}. Start again with a lower learning rate (optim.lr) or gradient clipping")

    def train(self, fresh: bool) -> bool:
        """Train to the end or until a stop signal; True when the run is complete."""
        task, tb, settings = self.task, self.run.tb, self.run.config.run
        if fresh:
            # A sweep's settings describe the whole sweep, not this run's hyperparameters.
            hparams = {key: value for key, value in flatten_config(self.run.config).items()
                       if not key.startswith("sweep.")}
            tb.hparams_start(hparams, list(task.summary_metrics))
        total = task.total_steps
        progress = Progress(total, task.step, settings.progress_every_s, interactive=None if self.leader else False,
                            phases=task.progress_phases(),
                            cadences={"evaluation": settings.eval_every, "checkpoint": settings.checkpoint_every})
        configure(settings.progress_every_s)  # the countdowns of long evaluations
        window = self.window
        # perf/sps is per stepping second: evaluations and checkpoints have their own progress and log lines.
        window_start, window_step = progress.stepping_seconds(), task.step
        session_start = time.perf_counter()
        try:
            with StopRequest() as stop:
                while task.step < total and not distributed.any_rank(stop.requested, task.device):
                    before = task.step
                    with task.precision.autocast():
                        step_figures = task.train_step()
                    window.add(step_figures)
                    step = task.step
                    last = step >= total
                    if crossed(before, step, settings.log_every) or last:
                        now = progress.stepping_seconds()
                        sps = (step - window_step) / max(now - window_start, 1e-9)
                        averages = distributed.mean_over_ranks(window.averages(), task.device)
                        self._stop_if_diverged(averages)
                        self.last_train.update(averages)
                        # Training wall time so far (this session's stepping, evaluations and checkpoints, plus
                        # the checkpoint's figure): what a curve against wall-clock hours is drawn from.
                        wall = self.elapsed_s + time.perf_counter() - session_start
                        tb.scalars({**averages, "perf/sps": sps, "perf/wall_time_s": wall}, step)
                        window.clear()
                        window_start, window_step = now, step
                    due_eval = (crossed(before, step, settings.eval_every) or last) and self.leader
                    due_checkpoint = crossed(before, step, settings.checkpoint_every) or last
                    if due_eval:
                        self._stop_if_diverged(window.sums)  # a diverged state is neither scored nor saved (see save)
                        with progress.pause("evaluation"):
                            self.last_eval = task.evaluate(final=last)
                        tb.scalars(self.last_eval, step)
                    if due_checkpoint:
                        self.elapsed_s += time.perf_counter() - session_start
                        session_start = time.perf_counter()
                        with progress.pause("checkpoint"):
                            self.save()
                    figures = {_short(t): v for t, v in {**self.last_train, **self.last_eval}.items()}
                    progress.update(step, {**figures, **task.progress_figures()})
                if self.saved_step != task.step:
                    self.elapsed_s += time.perf_counter() - session_start
                    self.save()
        finally:
            progress.close()
        if task.step < total:
            log.info("stopped at step %d of %d; checkpoint saved. Resume with: %s resume %s",
                     task.step, total, rlgen_command(), shlex.quote(str(self.run.directory)))
            return False
        self.run.write_summary({**self.last_train, **self.last_eval, "perf/wall_time_s": self.elapsed_s})
        tb.hparams_end()
        return True


def evaluate_run(run: Run) -> dict[str, Any]:
    """Evaluate the newest good checkpoint; write eval.json, merge the metrics into summary.json, and log them (and
    the task's images) to TensorBoard in place of an earlier evaluation's at that step."""
    task = build_task(run)
    configure(run.config.run.progress_every_s)  # the countdowns of long evaluations
    try:
        loaded = run.checkpoints.load_latest(map_location=task.device)
        if loaded is None:
            raise UserError(f"{run.directory}: no checkpoint to evaluate yet")
        path, state = loaded
        load_task_state(task, path, state)
        task.step = state["driver"]["step"]
        before = set(event_files(run.directory))
        metrics = task.evaluate(final=True)
        run.tb.scalars(metrics, task.step)
        run.tb.close()
        replace_older_events(run.directory, [p for p in event_files(run.directory) if p not in before])
    finally:
        task.close()
    result = {"step": task.step, "checkpoint": path.name, **metrics}
    write_json_atomic(run.directory / "eval.json", result)
    run.write_summary(metrics)
    return result
