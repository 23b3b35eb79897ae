"""Variance-exploding SDE configs (docs/configs.md)."""
