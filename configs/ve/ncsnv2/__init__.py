"""VE SDE configs of NCSNv2 (Song & Ermon, 2020) (docs/configs.md)."""
