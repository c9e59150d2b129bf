"""Generative models of images and their data and metrics."""
from generative import vae_task  # noqa: F401  (registers the vae task)
