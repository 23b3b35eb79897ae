"""Configs of the noise-conditional classifier for class-conditional sampling (facts §5.3)."""
