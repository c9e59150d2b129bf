"""The Python API (the rlgen package): `rlgen.run` trains as `rlgen run` does and `rlgen.load` gives back
what the checkpoint holds, checked against the runs' own evaluations and against networks rebuilt here from the
checkpoint files, without writing into the run folder or moving the caller's random generators."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import rlgen
from core.checkpoint import CheckpointManager, load_file
from core.config import load_config, parse_overrides
from core.errors import UserError
from core.experiments import find_experiment, load_components
from core.run import Run
from core.task import schema_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generative"))
from mnist_data import skip_without_mnist  # noqa: E402  (tests/generative's: MNIST where rlgen finds it)

XOR_POINTS = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]


def _files(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under `directory` with its size and modification time."""
    return {str(path.relative_to(directory)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in directory.rglob("*") if path.is_file()}


def _summary(directory: Path) -> dict:
    return json.loads((directory / "summary.json").read_text())


def _newest_state(directory: Path) -> dict:
    return load_file(CheckpointManager(directory / "checkpoints").paths()[-1])


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    # Nested-mapping overrides, a Path value among them.
    return rlgen.run("xor_mlp", train={"steps": 300}, run={"root": root, "eval_every": 100})


def test_override_strings_are_the_cli_overrides_and_parse_back_to_the_same_values() -> None:
    from rlgen.training import override_strings

    overrides = {"train.steps": 200, "optim": {"lr": 1e-3, "betas": (0.9, 0.99)}, "model.layer_norm": True,
                 "name": "my run: 2", "data.root": None, "note": "1e-4", "seed": np.int64(3), "run.root": Path("/x"),
                 "model.layers": [{"hidden": 16}, {"hidden": 8, "lr": float("inf")}], "tags": ["1e-4", "yes", 2.5]}
    strings = override_strings(overrides)
    assert strings[:3] == ["train.steps=200", "optim.lr=0.001", "optim.betas=[0.9, 0.99]"]
    assert parse_overrides(strings, "test") == {
        "train": {"steps": 200}, "optim": {"lr": 1e-3, "betas": [0.9, 0.99]},
        "model": {"layer_norm": True, "layers": [{"hidden": 16}, {"hidden": 8, "lr": float("inf")}]},
        "name": "my run: 2", "data": {"root": None}, "note": "1e-4", "seed": 3, "run": {"root": "/x"},
        "tags": ["1e-4", "yes", 2.5]}
    with pytest.raises(UserError, match="override seed: a object is not a config value"):
        override_strings({"seed": object()})


def test_run_trains_like_the_cli_and_load_predicts_what_the_network_does(xor_run: Path) -> None:
    assert xor_run.parent.name == "xor_mlp" and (xor_run / "summary.json").is_file()
    config = yaml.safe_load((xor_run / "config.yaml").read_text())
    assert config["train"]["steps"] == 300 and config["run"]["eval_every"] == 100
    assert "checkpoint" in (xor_run / "log.txt").read_text()  # INFO lines reach log.txt, as under the CLI
    before = _files(xor_run)
    torch.manual_seed(5)
    classifier = rlgen.load(xor_run)
    after_load = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after_load, torch.rand(3)), "loading moved the caller's random generator"
    assert _files(xor_run) == before, "loading wrote into the run folder"

    assert isinstance(classifier, rlgen.Classifier) and classifier.step == 300
    assert classifier.config.train.steps == 300 and classifier.checkpoint.name == "step-000000000300.pt"
    predictions = classifier.predict(np.array(XOR_POINTS))
    assert predictions.dtype == np.int64 and predictions.shape == (4,)
    accuracy = float(np.mean(predictions == [0, 1, 1, 0]))
    assert accuracy == _summary(xor_run)["eval/accuracy"]
    # The same network, rebuilt here from the config and the checkpoint file.
    from supervised.classifier import mlp_classifier

    network = mlp_classifier(classifier.config.model, (2,), 2)
    network.load_state_dict(_newest_state(xor_run)["task"]["model"])
    with torch.no_grad():
        logits = network(torch.tensor(XOR_POINTS)).numpy()
    np.testing.assert_allclose(classifier.logits(torch.tensor(XOR_POINTS)), logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(classifier.probabilities(XOR_POINTS).sum(axis=1), 1.0, rtol=1e-6)
    assert classifier.predict([0.0, 1.0]) == predictions[1] and np.ndim(classifier.predict([0.0, 1.0])) == 0
    with pytest.raises(UserError, match=r"input of shape \(3,\): expected \(2,\)"):
        classifier.predict([0.0, 1.0, 2.0])


def test_run_refuses_a_bad_override_and_leaves_no_run_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown key 'optim.lrr'"):
        rlgen.run("xor_mlp", optim={"lrr": 1.0}, run={"root": tmp_path})
    with pytest.raises(UserError, match="no such experiment"):
        rlgen.run("xor_mlpp", run={"root": tmp_path})
    assert list(tmp_path.iterdir()) == []


def test_run_takes_a_mapping_with_dotted_overrides(tmp_path: Path) -> None:
    experiment = yaml.safe_load(find_experiment("xor_mlp").read_text())
    directory = rlgen.run(experiment, **{"train.steps": 20, "run.root": str(tmp_path), "seed": 3})
    assert directory.parent == tmp_path / "classifier"  # a mapping without `name` is named after its task
    saved = yaml.safe_load((directory / "config.yaml").read_text())
    assert saved["train"]["steps"] == 20 and saved["seed"] == 3
    assert rlgen.load(directory).step == 20
    assert experiment["train"]["steps"] == 1000  # the caller's mapping is left as it was


def test_dqn_agent_acts_greedily_by_its_q_network(tmp_path: Path) -> None:
    directory = rlgen.run("dqn_cartpole", **{
        "train.total_steps": 300, "train.learning_starts": 100, "agent.mlp_hidden": [32, 32],
        "replay.capacity": 1000, "eval.episodes": 1, "eval.num_envs": 1, "run.root": tmp_path})
    before = _files(directory)
    agent = rlgen.load(directory, device="cpu")
    assert _files(directory) == before
    assert isinstance(agent, rlgen.Agent) and agent.step == 300 and agent.num_actions == 2
    assert agent.obs_shape == (4,)
    with agent.make_env(num_envs=5) as env:
        obs = env.reset()
        for _ in range(3):  # observations of a few steps in, not only starting states
            obs = env.step(agent.act(obs)).obs
    actions, q_values = agent.act(obs), agent.q_values(obs)
    assert actions.dtype == np.int64 and actions.shape == (5,) and q_values.shape == (5, 2)
    np.testing.assert_array_equal(actions, q_values.argmax(axis=1))
    # The online Q-network rebuilt here from the checkpoint file.
    from agents.dqn import QNetwork

    network = QNetwork(agent.config.agent, (4,), 2)
    network.load_state_dict(_newest_state(directory)["task"]["agent"]["online"])
    with torch.no_grad():
        own = network(torch.as_tensor(obs))
    np.testing.assert_allclose(q_values, own.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(actions, own.argmax(dim=1).numpy())
    # One observation or a batch, numpy (float64 too) or a tensor: the same answers.
    for index in range(5):
        single = agent.act(obs[index])
        assert isinstance(single, np.integer) and single == actions[index]
        np.testing.assert_allclose(agent.q_values(obs[index]), q_values[index], rtol=1e-6)
    np.testing.assert_array_equal(agent.act(torch.as_tensor(obs)), actions)
    np.testing.assert_array_equal(agent.act(obs.astype(np.float64)), actions)
    scores = agent.play(episodes=2, epsilon=0.0)
    assert len(scores) == 2 and all(score >= 1 for score in scores)


def test_pqn_agent_acts_greedily_by_its_q_network(tmp_path: Path) -> None:
    directory = rlgen.run("pqn_cartpole", **{
        "train.total_steps": 2048, "agent.mlp_hidden": [32, 32], "eval.episodes": 1, "eval.num_envs": 1,
        "run.root": tmp_path})
    agent = rlgen.load(directory)
    with agent.make_env(num_envs=4) as env:
        obs = env.reset()
    from agents.dqn import DQNAgentConfig, QNetwork

    settings = agent.config.agent
    network = QNetwork(DQNAgentConfig(network=settings.network, mlp_hidden=list(settings.mlp_hidden),
                                      norm=settings.norm), (4,), 2)
    network.load_state_dict(_newest_state(directory)["task"]["agent"]["network"])
    with torch.no_grad():
        own = network(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(agent.q_values(obs), own, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(agent.act(obs), own.argmax(axis=1))
    assert agent.act(obs[2]) == own[2].argmax()


def test_atari_agent_takes_uint8_frame_stacks(tmp_path: Path) -> None:
    """A Breakout DQN loads without its gigabytes of replay memory or its eight emulators; a run folder with a
    Q-network's checkpoint is enough."""
    load_components()
    from agents.dqn import QNetwork

    config = load_config(find_experiment("dqn_breakout"), [], schema_for)
    directory = Run.create_at(tmp_path / "breakout", config).directory
    network = QNetwork(config.agent, (4, 84, 84), 4)
    CheckpointManager(directory / "checkpoints").save(
        3, {"format": 1, "task": {"agent": {"online": network.state_dict()}}, "driver": {"step": 3}})
    agent = rlgen.load(directory)
    assert agent.obs_shape == (4, 84, 84) and agent.obs_dtype == np.uint8 and agent.num_actions == 4
    with agent.make_env(num_envs=2) as env:
        obs = env.reset()
    with torch.no_grad():
        own = network(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(agent.q_values(obs), own, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(agent.act(obs), own.argmax(axis=1))
    assert agent.act(obs[1]) == own[1].argmax()


def test_load_refuses_what_is_no_trained_run(tmp_path: Path) -> None:
    load_components()
    with pytest.raises(UserError, match="not a run directory"):
        rlgen.load(tmp_path)
    config = load_config(find_experiment("xor_mlp"), [f"run.root={tmp_path}"], schema_for)
    empty = Run.create_at(tmp_path / "empty", config).directory
    with pytest.raises(UserError, match="no checkpoint yet"):
        rlgen.load(empty)
    CheckpointManager(empty / "checkpoints").save(1, {"format": 1, "task": {"model": {"bogus": torch.zeros(1)}},
                                                      "driver": {"step": 1}})
    with pytest.raises(UserError, match="does not fit the run's task 'classifier'"):
        rlgen.load(empty)


def test_gan_samples_are_its_generator_s_images(tmp_path: Path) -> None:
    """A GAN loads without its judge or dataset: a run folder with a generator's checkpoint is enough."""
    load_components()
    from generative.gan import Generator

    config = load_config(find_experiment("gan_mnist"), ["model.width=4", "model.latent=8"], schema_for)
    directory = Run.create_at(tmp_path / "gan", config).directory
    generator = Generator(config.model)
    CheckpointManager(directory / "checkpoints").save(7, {"format": 1, "task": {"generator": generator.state_dict()},
                                                          "driver": {"step": 7}})
    gan = rlgen.load(directory)
    assert isinstance(gan, rlgen.GANModel) and gan.step == 7
    images = gan.sample(5, generator=torch.Generator().manual_seed(0))
    assert images.shape == (5, 1, 28, 28) and 0 <= float(images.min()) and float(images.max()) <= 1
    with torch.no_grad():
        own = generator.eval()(torch.randn(5, 8, generator=torch.Generator().manual_seed(0))).add(1).div(2)
    torch.testing.assert_close(images, own)


def _test_images(config, count: int) -> torch.Tensor:
    """The run's evaluation images, as its task takes them from the test set."""
    from generative.data import evaluation_images, load_images

    return evaluation_images(load_images(config.data, torch.device("cpu")).test, config.data)[:count]


def test_vae_samples_and_likelihood_match_the_run_s_evaluation(tmp_path: Path) -> None:
    skip_without_mnist()
    directory = rlgen.run("vae_mnist", **{
        "device": "cpu", "threads": 1, "train.epochs": 0.02, "model.hidden": [64], "model.latent": 8,
        "eval.k": 50, "eval.images": 200, "eval.grid_images": 4, "run.root": tmp_path})
    vae = rlgen.load(directory)
    assert isinstance(vae, rlgen.VAEModel) and vae.image_shape == (1, 28, 28)
    images = vae.sample(6)
    assert images.shape == (6, 1, 28, 28) and 0 <= float(images.min()) and float(images.max()) <= 1
    test = _test_images(vae.config, 200)
    log_likelihood = vae.log_likelihood(test)  # the run's eval.k = 50 samples
    assert log_likelihood.shape == (200,) and bool(torch.isfinite(log_likelihood).all())
    assert float(log_likelihood.max()) <= 0
    summary = _summary(directory)
    # Another draw of the same 50-sample bound the run reported, and no lower than its ELBO.
    assert abs(float(log_likelihood.mean()) + summary["eval/test_nll"]) < 1.0
    assert float(log_likelihood.mean()) > summary["eval/test_elbo"] - 1.0
    assert vae.log_likelihood(test[0], samples=10).shape == ()
    mean, log_var = vae.encode(test[:3].flatten(1))  # flat images are taken too
    assert mean.shape == log_var.shape == (3, 8) and vae.decode(mean).shape == (3, 1, 28, 28)


def test_rbm_likelihood_is_the_run_s_and_ais_finds_its_exact_partition_function(tmp_path: Path) -> None:
    skip_without_mnist()
    directory = rlgen.run("rbm_mnist", **{
        "device": "cpu", "threads": 1, "train.epochs": 0.02, "model.hidden": 16, "eval.images": 500,
        "eval.grid_chains": 2, "eval.grid_snapshots": 1, "eval.grid_gibbs_steps": 1, "eval.filters": 0,
        "eval.ais_runs": 4, "eval.ais_temperatures": 100, "run.root": tmp_path})
    rbm = rlgen.load(directory)
    assert isinstance(rbm, rlgen.RBMModel) and len(rbm.dbn.layers) == 1
    summary = _summary(directory)
    # 16 hidden units: log Z by enumeration, so log p(v) is exact and equals the run's exact figure.
    assert rbm.log_partition() == pytest.approx(summary["eval/log_z_exact"], abs=1e-9)
    log_likelihood = rbm.log_likelihood(_test_images(rbm.config, 500))
    assert log_likelihood.shape == (500,) and float(log_likelihood.max()) <= 0
    assert float(log_likelihood.mean()) == pytest.approx(summary["eval/test_loglik_exact"], abs=1e-6)
    assert rbm.log_partition("ais", runs=20, temperatures=1000) == pytest.approx(rbm.log_partition(), abs=0.2)
    images = rbm.sample(3, gibbs_steps=10)
    assert images.shape == (3, 1, 28, 28) and 0 <= float(images.min()) and float(images.max()) <= 1
