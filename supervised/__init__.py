"""Supervised learning: the classifier task (gradient descent on labelled data) and Rosenblatt's perceptron."""
# Importing the task modules registers them.
from supervised import classifier, perceptron  # noqa: F401
