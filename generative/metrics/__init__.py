"""Figures of merit for generative models: likelihood bounds and estimates, sample quality."""
