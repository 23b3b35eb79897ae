"""Variance-exploding SDE configs (facts §7.3)."""
