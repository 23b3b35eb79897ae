"""VE SDE configs of NCSN v1 (Song & Ermon, 2019) and its NCSNv2 ablations (docs/configs.md)."""
