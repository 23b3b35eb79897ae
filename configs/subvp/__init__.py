"""Sub-variance-preserving SDE configs (docs/configs.md)."""
