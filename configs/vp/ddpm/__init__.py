"""The DDPM U-Net of Ho et al. (2020) with the VP SDE (docs/configs.md)."""
