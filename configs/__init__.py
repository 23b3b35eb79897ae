"""Experiment configs with the original score_sde key layout (facts §7); each exposes get_config()."""
