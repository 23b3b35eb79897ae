"""The DDPM U-Net of Ho et al. (2020) with the VP SDE (facts §6.3, §7.3)."""
