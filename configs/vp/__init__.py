"""Variance-preserving SDE configs (docs/configs.md)."""
