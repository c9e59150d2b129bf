"""The collectives of core/distributed.py in two real gloo processes, the torchrun command line, and the
configurations refused before anything is launched."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core import distributed
from core.cli import main

ROOT = Path(__file__).resolve().parents[2]
XOR = str(ROOT / "experiments" / "xor_mlp.yaml")
VAE = str(ROOT / "experiments" / "vae_mnist.yaml")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _collectives(rank: int, port: int, results: "mp.Queue") -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        shared = distributed.broadcast_object({"from": rank})
        stop = distributed.any_rank(rank == 1, torch.device("cpu"))
        means = distributed.mean_over_ranks({"a": float(rank), "b": 10.0 * rank}, torch.device("cpu"))
        gradients = [torch.full((2, 2), float(rank)), torch.tensor([1.0 + rank, 3.0 * rank])]
        distributed.average_tensors(gradients)
        weights = torch.full((3,), float(rank + 5))
        distributed.broadcast_tensors([weights])
        results.put((rank, shared, stop, means, [g.tolist() for g in gradients], weights.tolist(),
                     distributed.is_leader(), distributed.world_size()))
    finally:
        dist.destroy_process_group()


def test_collectives_agree_across_two_gloo_processes() -> None:
    context = mp.get_context("spawn")
    results = context.Queue()
    port = _free_port()
    processes = [context.Process(target=_collectives, args=(rank, port, results)) for rank in range(2)]
    for process in processes:
        process.start()
    outcomes = dict((item[0], item[1:]) for item in (results.get(timeout=120) for _ in processes))
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    for rank, (shared, stop, means, gradients, weights, leader, world) in outcomes.items():
        assert shared == {"from": 0}  # rank 0's object everywhere
        assert stop is True  # rank 1 asked to stop: every rank stops
        assert means == {"a": 0.5, "b": 5.0}
        assert gradients == [[[0.5, 0.5], [0.5, 0.5]], [1.5, 1.5]]
        assert weights == [5.0, 5.0, 5.0]
        assert leader == (rank == 0) and world == 2


def test_outside_torchrun_every_collective_is_the_identity() -> None:
    tensor = torch.tensor([1.0, 2.0])
    distributed.average_tensors([tensor])
    assert tensor.tolist() == [1.0, 2.0]
    assert distributed.broadcast_object("x") == "x" and distributed.any_rank(False, torch.device("cpu")) is False
    assert distributed.shard_batch_size(100) == (100, (0, 1))


def test_torchrun_command_is_standalone_on_one_machine_and_passes_multi_node_flags_on() -> None:
    local = distributed.torchrun_command(2, ["run", "vae_mnist"])
    assert "--standalone" in local and "--nproc-per-node=2" in local
    assert local[-4:] == ["-m", "core.cli", "run", "vae_mnist"]
    nodes = distributed.torchrun_command(4, ["resume", "runs/x"], "--nnodes=2 --node-rank=1 --rdzv-endpoint=h:29400")
    assert "--standalone" not in nodes
    assert nodes[nodes.index("--nproc-per-node=4") + 1:][:3] == ["--nnodes=2", "--node-rank=1", "--rdzv-endpoint=h:29400"]


@pytest.mark.parametrize("experiment, overrides, message", [
    (XOR, ["distributed.nproc=2"], "task 'classifier' does not train data-parallel; tasks that do: dbn, rbm, vae"),
    (VAE, ["distributed.nproc=3"], "train.batch_size (100) must be a multiple of distributed.nproc (3)"),
    (VAE, ["distributed.nproc=0"], "distributed.nproc must be >= 1, got 0"),
    (VAE, ["distributed.backend=mpi", "distributed.nproc=2"], "distributed.backend: unknown 'mpi'"),
])
def test_impossible_settings_stop_before_launching(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   experiment: str, overrides: list[str], message: str) -> None:
    assert main(["run", experiment, f"run.root={tmp_path}", *overrides]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not any(tmp_path.iterdir())
