"""Configs of the noise-conditional classifier for class-conditional sampling (App. I.1)."""
