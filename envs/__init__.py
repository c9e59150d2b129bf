"""Environment factories: Atari through ale-py's vector env, Gymnasium classic control."""
from envs.base import ENV_KINDS, EnvConfig, FinishedGame, StepResult, VectorEnv, game_name, make_env

# Importing the kinds registers them in ENV_KINDS.
from envs import atari, gym  # noqa: F401

__all__ = ["ENV_KINDS", "EnvConfig", "FinishedGame", "StepResult", "VectorEnv", "game_name", "make_env"]
