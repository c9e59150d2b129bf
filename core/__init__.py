"""Shared foundation of rlgen: config, runs, checkpoints, nets, optimizers, replay, sampling, CLI."""
