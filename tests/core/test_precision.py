"""The precision setting: what `auto` picks on which hardware, what bf16 changes in a loss and its gradients,
channels-last as the same function, refused values, and saved runs replaying with the precision they had."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from agents.dqn import Batch, DQNAgentConfig, QNetwork, td_loss
from core.config import load_config
from core.errors import UserError
from core.experiments import load_components
from core.nets import NatureTorso, is_channels_last
from core.precision import Precision, _warn_once, cpu_flags, native_bf16, resolve_channels_last, resolve_precision
from core.run import Run
from core.task import schema_for

load_components()  # the tests below name tasks of every package (classifier, rbm, vae, dqn), alone or in the suite

ROOT = Path(__file__).resolve().parents[2]
XOR = ROOT / "experiments" / "xor_mlp.yaml"
CPU = torch.device("cpu")
AVX2_EPYC = {"fpu", "sse4_2", "avx", "avx2", "fma"}
SAPPHIRE_RAPIDS = AVX2_EPYC | {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}
COOPER_LAKE = AVX2_EPYC | {"avx512f", "avx512_bf16"}


def _rlgen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("flags, unharmed, expected", [
    (AVX2_EPYC, True, "fp32"),  # bfloat16 would be emulated: auto stays float32
    (COOPER_LAKE, True, "bf16"),
    (SAPPHIRE_RAPIDS, True, "bf16"),
    (SAPPHIRE_RAPIDS, False, "fp32"),  # hardware has it, but the task's A/B has not shown it harmless
    (set(), True, "fp32"),  # no /proc/cpuinfo (macOS, Windows)
])
def test_auto_picks_bf16_only_on_native_hardware_for_tasks_shown_unharmed(flags, unharmed, expected) -> None:
    assert resolve_precision("auto", CPU, unharmed, flags=flags) == expected


def test_explicit_precisions_are_kept_and_others_refused_with_the_valid_values() -> None:
    for name in ("fp32", "tf32", "bf16"):
        assert resolve_precision(name, CPU, False, flags=AVX2_EPYC) == name
    for name in ("fp16", "bf61", "float32"):
        with pytest.raises(UserError, match=f"precision: '{name}' is not one of auto, fp32, tf32, bf16"):
            resolve_precision(name, CPU, True, flags=AVX2_EPYC)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert native_bf16(CPU, cpu_flags(cpuinfo))
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_channels_last_by_default_on_the_cpu_and_as_asked_otherwise() -> None:
    assert resolve_channels_last(None, CPU, "fp32") is True
    assert resolve_channels_last(False, CPU, "bf16") is False
    assert resolve_channels_last(None, torch.device("cuda"), "fp32") is False
    assert resolve_channels_last(None, torch.device("cuda"), "bf16") is True


def test_precision_fp16_or_a_typo_exits_2_with_the_valid_values(tmp_path: Path) -> None:
    for value in ("fp16", "bf61"):
        result = _rlgen("run", "experiments/xor_mlp.yaml", f"precision={value}", f"run.root={tmp_path}")
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [f"rlgen: error: experiments/xor_mlp.yaml: precision: "
                                                      f"{value!r} is not one of auto, fp32, tf32, bf16"]
    assert not any(path.is_file() for path in tmp_path.rglob("*"))


def test_a_task_without_autograd_refuses_bf16(tmp_path: Path) -> None:
    result = _rlgen("run", "experiments/rbm_mnist.yaml", "precision=bf16", f"run.root={tmp_path}")
    assert result.returncode == 2, result.stderr
    assert "precision: task 'rbm' takes auto, fp32, tf32, not 'bf16'" in result.stderr
    assert "Traceback" not in result.stderr


def _nature_batch(generator: torch.Generator, size: int = 32) -> Batch:
    frames = torch.randint(0, 256, (size, 4, 84, 84), dtype=torch.uint8, generator=generator)
    next_frames = torch.randint(0, 256, (size, 4, 84, 84), dtype=torch.uint8, generator=generator)
    return Batch(frames, torch.randint(0, 4, (size,), generator=generator), torch.randn(size, generator=generator),
                 next_frames, torch.full((size,), 0.99), torch.ones(size))


def _loss_and_gradients(online: QNetwork, target: QNetwork, batch: Batch, precision: Precision):
    online.zero_grad(set_to_none=True)
    with precision.autocast():
        loss, td_error, _ = td_loss(online, target, batch, double=False, loss="mse")
    loss.backward()
    return loss, td_error, torch.cat([p.grad.flatten() for p in online.parameters()])


def test_bf16_td_loss_and_gradients_lie_within_tolerance_of_fp32() -> None:
    """The Nature network on one fixed batch: bfloat16 keeps ~3 significant digits in every product. Seen here:
    the loss to 1e-5, TD errors to 2e-4 of their largest, the gradient to 4.0% of its norm (cosine 0.9992);
    the bounds leave room for other hardware's accumulation order. Losses and targets stay float32."""
    torch.manual_seed(0)
    online = QNetwork(DQNAgentConfig(), (4, 84, 84), 4)
    target = copy.deepcopy(online)
    for parameter in target.parameters():  # a target net that differs, so TD errors are not ~0
        parameter.data.add_(0.01 * torch.randn_like(parameter))
    batch = _nature_batch(torch.Generator().manual_seed(1))
    loss32, error32, grad32 = _loss_and_gradients(online, target, batch, Precision("fp32"))
    loss16, error16, grad16 = _loss_and_gradients(online, target, batch, Precision("bf16"))
    assert loss16.dtype == torch.float32 and error16.dtype == torch.float32
    assert loss16.item() == pytest.approx(loss32.item(), rel=0.02)
    assert torch.allclose(error16, error32, atol=0.02 * error32.abs().max().item())
    assert (grad16 - grad32).norm() / grad32.norm() < 0.08
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.995


def test_channels_last_computes_the_same_q_values_and_gradients() -> None:
    torch.manual_seed(0)
    plain = QNetwork(DQNAgentConfig(norm="layer"), (4, 84, 84), 4)
    nhwc = Precision("fp32", channels_last=True).prepare(copy.deepcopy(plain))
    assert is_channels_last(nhwc.torso.layers[0].weight) and not is_channels_last(plain.torso.layers[0].weight)
    batch = _nature_batch(torch.Generator().manual_seed(2), size=8)
    loss, error, grad = _loss_and_gradients(plain, plain, batch, Precision("fp32"))
    loss_cl, error_cl, grad_cl = _loss_and_gradients(nhwc, nhwc, batch, Precision("fp32"))
    assert torch.allclose(error_cl, error, atol=1e-5) and loss_cl.item() == pytest.approx(loss.item(), rel=1e-5)
    assert torch.allclose(grad_cl, grad, atol=1e-5, rtol=1e-4)


def test_the_torso_takes_frames_in_its_weights_layout() -> None:
    """Bytes are converted to the computing dtype and layout in one copy; float input keeps its values."""
    torso = Precision("fp32", channels_last=True).prepare(NatureTorso())
    seen: list[torch.Tensor] = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: seen.append(out))
    frames = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    try:
        features = torso(frames)
    finally:
        handle.remove()
    first_activation = seen[0]  # the ReLU after the first convolution
    assert first_activation.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(features, torso(frames.float() / 255), atol=1e-5)


def test_runs_saved_before_the_setting_replay_in_fp32(tmp_path: Path) -> None:
    """A config.yaml without `precision` is from a run that trained in float32 and contiguous layout: resume
    and eval keep that rather than take today's `auto`."""
    config = load_config(XOR, [f"run.root={tmp_path}"], schema_for)
    run = Run.create(config)
    saved = yaml.safe_load((run.directory / "config.yaml").read_text())
    assert saved["precision"] == "auto" and saved["channels_last"] is None
    del saved["precision"], saved["channels_last"]
    (run.directory / "config.yaml").write_text(yaml.safe_dump(saved))
    reopened = Run.open(run.directory, schema_for)
    assert (reopened.config.precision, reopened.config.channels_last) == ("fp32", False)
    run.close()
    reopened.close()


def test_a_run_folder_keeps_the_resolved_precision_and_resume_keeps_it(tmp_path: Path) -> None:
    assert _rlgen("run", "experiments/xor_mlp.yaml", f"run.root={tmp_path}", "train.steps=20").returncode == 0
    [config_file] = tmp_path.glob("xor_mlp/*/config.yaml")
    saved = yaml.safe_load(config_file.read_text())
    assert (saved["precision"], saved["channels_last"]) == ("fp32", True)  # this CPU-only test machine
    saved["channels_last"] = False
    config_file.write_text(yaml.safe_dump(saved))
    assert _rlgen("resume", str(config_file.parent), "train.steps=40").returncode == 0
    resumed = yaml.safe_load(config_file.read_text())
    assert (resumed["precision"], resumed["channels_last"], resumed["train"]["steps"]) == ("fp32", False, 40)


def _mlp_agent(precision: Precision):
    from agents.dqn import DQNAgent
    from core.optim import OptimConfig

    torch.manual_seed(3)
    return DQNAgent(DQNAgentConfig(network="mlp", mlp_hidden=[16, 16]), OptimConfig(name="adam", lr=1e-2), (4,), 2,
                    100, CPU, seed=0, precision=precision)


def _mlp_batch() -> Batch:
    generator = torch.Generator().manual_seed(4)
    return Batch(torch.randn(8, 4, generator=generator), torch.randint(0, 2, (8,), generator=generator),
                 torch.randn(8, generator=generator), torch.randn(8, 4, generator=generator), torch.full((8,), 0.9),
                 torch.ones(8))


def test_compiled_updates_equal_eager_ones_and_keep_the_state_dict_keys() -> None:
    eager, compiled = _mlp_agent(Precision("fp32")), _mlp_agent(Precision("fp32", compile_networks=True))
    assert compiled.online._compiled_call_impl is not None and eager.online._compiled_call_impl is None
    for _ in range(3):
        eager.update(_mlp_batch())
        compiled.update(_mlp_batch())
    assert list(compiled.state_dict()["online"]) == list(eager.state_dict()["online"])
    for name, value in eager.online.state_dict().items():
        assert torch.allclose(compiled.online.state_dict()[name], value, atol=1e-6), name


def test_compile_without_a_cpp_compiler_runs_eagerly_with_one_warning(monkeypatch, caplog) -> None:
    monkeypatch.setattr("core.precision.shutil.which", lambda name: None)
    _warn_once.cache_clear()
    with caplog.at_level("WARNING", logger="rlgen"):
        agent = _mlp_agent(Precision("fp32", compile_networks=True))
    assert agent.online._compiled_call_impl is None
    assert [record.message for record in caplog.records].count(
        "compile: torch.compile needs a C++ compiler on the CPU and none was found; running eagerly") == 1


def test_compile_is_refused_by_tasks_that_do_not_compile(tmp_path: Path) -> None:
    result = _rlgen("run", "experiments/xor_mlp.yaml", "compile=true", f"run.root={tmp_path}")
    assert result.returncode == 2
    assert "compile: task 'classifier' does not compile its networks (tasks that do: dqn" in result.stderr


def test_auto_picks_bf16_on_native_hardware_only_for_the_tasks_whose_ab_passed() -> None:
    """docs/results.md: the VAE's 100-epoch A/B passed; the DQN's and PQN's Breakout A/B has not run."""
    import agents  # noqa: F401  (registers dqn and pqn)
    from core.task import TASKS

    chosen = {name: resolve_precision("auto", CPU, TASKS.get(name).auto_bf16, flags=SAPPHIRE_RAPIDS)
              for name in ("vae", "dqn", "pqn", "gan", "classifier", "rbm")}
    assert chosen == {"vae": "bf16", "dqn": "fp32", "pqn": "fp32", "gan": "fp32", "classifier": "fp32", "rbm": "fp32"}
    assert resolve_precision("auto", CPU, TASKS.get("vae").auto_bf16, flags=AVX2_EPYC) == "fp32"
