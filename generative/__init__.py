"""Generative models of images and their data and metrics."""
# Importing the task modules registers them: rbm, dbn, vae, autoencoder, gan, and the mnist dataset and cnn model of
# the classifier task (the judge of the GAN's Fréchet distance).
from generative import autoencoder_task, gan_task, mnist_classifier, rbm_task, vae_task  # noqa: F401
