"""Experiment configs with the original score_sde key layout; each exposes get_config().

See docs/configs.md.
"""
