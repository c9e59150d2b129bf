"""`rlgen run | resume | eval | list`: the front door. User mistakes end with one line and exit code 2."""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from agents.play import add_play_parser
from core import distributed
from core.config import load_config
from core.driver import Driver, build_task, check_data_parallel, evaluate_run, start_run, train_run
from core.errors import UserError
from core.experiments import experiments_folder, find_experiment, load_components
from core.invocation import tensorboard_command
from core.nets import ACTIVATIONS, INIT_SCHEMES
from core.optim import OPTIMIZERS, SCHEDULES
from core.progress import TqdmLogHandler
from core.report import add_report_parser
from core.registry import all_registries
from core.run import Run, load_saved_config
from core.sweep import add_sweep_parser
from core.task import TASKS, schema_for

log = logging.getLogger("rlgen")

EXIT_USER_ERROR = 2


def command_run(args: argparse.Namespace) -> int:
    config = load_config(find_experiment(args.experiment), args.overrides, schema_for)
    check_data_parallel(config)
    if distributed.wants_launch(config):
        return distributed.launch(config, ["run", args.experiment, *args.overrides], args.torchrun)
    run, task = start_run(config)
    return _train(run, task, fresh=True)


def command_resume(args: argparse.Namespace) -> int:
    run = Run.open(Path(args.run_dir), schema_for)
    changes = run.amend(args.overrides, TASKS.get(run.config.task).length_keys, schema_for) if args.overrides else []
    if distributed.wants_launch(run.config):
        check_data_parallel(run.config)
        return distributed.launch(run.config, ["resume", args.run_dir, *args.overrides], args.torchrun)
    distributed.initialise(run.config)
    if not distributed.is_leader():
        run = Run.follower(run.directory, run.config)
    run.start_log_file()  # so log.txt records where the run resumed from and what changed
    try:
        task = build_task(run)
    except BaseException:
        run.close()
        raise
    driver = Driver(run, task)
    try:
        restored = driver.restore()
    except BaseException:
        task.close()
        run.close()
        raise
    if changes:  # saved once the task and its checkpoint accepted them, so a refusal leaves the run as it was
        run.save_config()
        for change in changes:
            log.info("resumed with %s", change)
    return _train(run, task, fresh=not restored, driver=driver)


def _train(run: Run, task, fresh: bool, driver: Optional[Driver] = None) -> int:
    complete = train_run(run, task, fresh, driver)
    if complete and run.writes:
        summary = run.read_summary()
        print(json.dumps(summary, indent=2, sort_keys=True))
        print(f"done: {run.directory}  (watch it with: {tensorboard_command()} --logdir {shlex.quote(str(run.directory))})")
    return 0


def command_eval(args: argparse.Namespace) -> int:
    directory = Path(args.run_dir)
    run = Run.open(directory, schema_for)
    overrides = list(args.overrides)
    if args.episodes is not None:
        overrides.append(f"eval.episodes={args.episodes}")
    if overrides:
        run.config = load_saved_config(directory, overrides, schema_for)
    result = evaluate_run(run)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def command_fetch(args: argparse.Namespace) -> int:
    """Download an image dataset once (verified) to where runs and tests look for it."""
    # Imported when the command runs, like every component package (load_components).
    from generative.data import DATASETS, DataConfig, data_root, load_arrays

    config = DataConfig(name=args.dataset, root=args.root, mirrors=list(args.mirror))
    train, _, test, _ = load_arrays(config)
    print(f"{args.dataset}: {len(train)} training and {len(test)} test images in "
          f"{data_root(config) / DATASETS[args.dataset].folder}")
    return 0


def command_list(args: argparse.Namespace) -> int:
    folder = experiments_folder()
    print(f"experiments ({folder}):")
    for path in sorted(folder.glob("*.yaml")):
        print(f"  {path.stem}")
    print("tasks: " + ", ".join(TASKS.names()))
    for registry in all_registries():
        if registry is not TASKS:
            label = "classifier datasets" if registry.kind == "dataset" else f"{registry.kind}s"
            print(f"{label}: " + ", ".join(registry.names()))
    from generative.data import DATASETS as IMAGE_DATASETS  # imported late, as in command_fetch
    print("image datasets (data.name of vae, autoencoder, rbm, dbn, gan; `rlgen fetch NAME` downloads one): "
          + ", ".join(IMAGE_DATASETS))
    print("optimizers: " + ", ".join(OPTIMIZERS))
    print("lr schedules: " + ", ".join(SCHEDULES))
    print("activations: " + ", ".join(ACTIVATIONS))
    print("init schemes: " + ", ".join(INIT_SCHEMES))
    return 0


def _add_torchrun_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--torchrun", default="", metavar="ARGS",
                        help="arguments passed on to torchrun when distributed.nproc > 1, for several machines: "
                             "--torchrun='--nnodes=2 --node-rank=0 --rdzv-endpoint=HOST:29400'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlgen", description="Train, resume and evaluate deep RL agents and generative models from YAML."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="start a new run of an experiment",
                              description="Start a new run: runs/<experiment>/<timestamp>/.")
    run.add_argument("experiment", help="experiment YAML file, or its name in experiments/")
    run.add_argument("overrides", nargs="*", help="dotted overrides, YAML-typed: optim.lr=3e-4 seed=2")
    _add_torchrun_option(run)
    run.set_defaults(handler=command_run)
    resume = commands.add_parser("resume", help="continue a stopped or killed run from its newest good checkpoint",
                                 description="Continue a run in the same folder from its newest good checkpoint.")
    resume.add_argument("run_dir", help="the run folder (runs/<experiment>/<timestamp>)")
    resume.add_argument("overrides", nargs="*",
                        help="train longer or log differently: train.epochs=25 run.eval_every=500 (saved to config.yaml)")
    _add_torchrun_option(resume)
    resume.set_defaults(handler=command_resume)
    evaluate = commands.add_parser("eval", help="evaluate a run's newest checkpoint",
                                   description="Evaluate the newest checkpoint; writes eval.json and summary.json.")
    evaluate.add_argument("run_dir", help="the run folder")
    evaluate.add_argument("overrides", nargs="*", help="dotted overrides of evaluation settings")
    evaluate.add_argument("--episodes", type=int, help="games to play (RL runs): short for eval.episodes=N")
    evaluate.set_defaults(handler=command_eval)
    add_sweep_parser(commands)
    add_report_parser(commands)
    add_play_parser(commands)
    fetch = commands.add_parser("fetch", help="download an image dataset once, checksums verified",
                                description="Download MNIST or Fashion-MNIST to data.root's default: $RLGEN_DATA, "
                                            "else ~/.cache/rlgen/data.")
    fetch.add_argument("dataset", help="mnist | fashion_mnist")
    fetch.add_argument("--root", default=None, help="data root instead of $RLGEN_DATA / ~/.cache/rlgen/data")
    fetch.add_argument("--mirror", action="append", default=[], help="a base URL tried first (file:// works)")
    fetch.set_defaults(handler=command_fetch)
    listing = commands.add_parser("list", help="list experiments and registered components",
                                  description="List the experiment files and every registered component.")
    listing.set_defaults(handler=command_list)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse `argv` with options and positionals (overrides, paths) in any order: `rlgen eval RUN --episodes 1
    threads=1` as well as `rlgen eval RUN threads=1 --episodes 1` (plain argparse stops a list at an option)."""
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    if argv and argv[0] in commands.choices:
        args = commands.choices[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


def _setup_logging() -> None:
    handler = TqdmLogHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Data-parallel ranks other than 0 only report problems: rank 0 tells the run's story once.
    root.setLevel(logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `rlgen` console script."""
    _setup_logging()
    args = parse_arguments(build_parser(), sys.argv[1:] if argv is None else list(argv))
    try:
        load_components()
        return args.handler(args)
    except UserError as error:
        print(f"rlgen: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("rlgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
