"""Supervised learning by rules other than gradient descent: Rosenblatt's perceptron."""
# Importing the task module registers it.
from supervised import perceptron  # noqa: F401
