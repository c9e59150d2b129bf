"""rlgen as a library, in the manner of Stable-Baselines3's load/predict: `rlgen.run` trains an experiment as
`rlgen run` does and returns its run folder; `rlgen.load` gives back what a run folder's newest checkpoint
trained (an Agent, Classifier, VAEModel, RBMModel or GANModel).

    import rlgen
    path = rlgen.run("dqn_cartpole", seed=2, **{"train.total_steps": 20000})
    agent = rlgen.load(path)
    action = agent.act(observation)
"""
from rlgen.loading import load
from rlgen.models import Agent, Classifier, GANModel, Loaded, RBMModel, VAEModel
from rlgen.training import run

__all__ = ["load", "run", "Loaded", "Agent", "Classifier", "VAEModel", "RBMModel", "GANModel"]
