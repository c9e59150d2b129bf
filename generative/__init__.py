"""Generative models of images and their data and metrics."""
from generative import rbm_task, vae_task  # noqa: F401  (register the rbm, dbn and vae tasks)
