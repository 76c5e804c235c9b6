"""Experiments: configs, run(config) -> results, CLI commands, plots."""
