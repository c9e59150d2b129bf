"""Reinforcement-learning agents and their training loops."""
from agents import loop, pqn  # noqa: F401  (register the dqn and pqn tasks)
