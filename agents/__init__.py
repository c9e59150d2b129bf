"""Reinforcement-learning agents and their training loop."""
