"""Generative models of images and their data and metrics."""
