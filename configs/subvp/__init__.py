"""Sub-variance-preserving SDE configs (facts §7.3)."""
