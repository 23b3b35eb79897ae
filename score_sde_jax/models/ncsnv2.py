"""NCSN (v1) and NCSNv2 RefineNet score networks (docs/original_code.md#networks).

Registered names: 'ncsnv2_64' (≤ 64 px), 'ncsnv2_128' (96–128 px), 'ncsnv2_256' and 'ncsn'.
All share one topology, described by two tuples:

* ``down_blocks``: after the two full-resolution blocks, each entry (m, d) adds a "down" residual
  block and a plain one with m·nf channels and dilation d (dilated "down" blocks keep the
  spatial size);
* ``refine_mults``: RefineBlock widths, deepest first, each fusing one backbone level with the
  previous refinement.

NCSNv2 (Song & Ermon 2020) is noise-unconditional inside and divides its output by σ[label]
(``scale_by_sigma``); NCSN v1 (Song & Ermon 2019) instead conditions every normalization on the
integer noise label through per-level embeddings (conditional InstanceNorm++), with no output
scaling. The original NCSN v1 could not be built (docs/original_code.md, D11): its configs never set
``model.num_classes`` and a downsampling block misused the normalization factory. Here the number
of classes is ``model.num_scales`` (one embedding row per noise level, as the method requires) and
the block is fixed; CIFAR-10 (N = 10) then has 34,428,675 parameters.
"""

import flax.linen as nn

from score_sde_jax.models import register_model
from score_sde_jax.models.layers import get_act, sigmas_of_labels
from score_sde_jax.models.normalization import get_normalization
from score_sde_jax.models.refinenet import (
    ConditionalResidualBlock,
    CondRefineBlock,
    RefineBlock,
    ResidualBlock,
    ncsn_conv3x3,
)

# (down_blocks, refine_mults) of each registered variant.
_VARIANTS = {
    "ncsn": (((2, 1), (2, 2), (2, 4)), (2, 2, 2, 1)),
    "ncsnv2_64": (((2, 1), (2, 2), (2, 4)), (2, 2, 2, 1)),
    "ncsnv2_128": (((2, 1), (2, 1), (4, 2), (4, 4)), (4, 2, 2, 1, 1)),
    "ncsnv2_256": (((2, 1), (2, 1), (2, 1), (4, 2), (4, 4)), (4, 2, 2, 2, 1, 1)),
}


@register_model("ncsnv2_64")
@register_model("ncsnv2_128")
@register_model("ncsnv2_256")
class NCSNv2(nn.Module):
    """RefineNet score network; ``conditional=True`` gives NCSN v1.

    Attributes:
      nf: base channel count.
      down_blocks: (channel multiple, dilation) of each level below the first (module docstring).
      refine_mults: RefineBlock widths in units of nf, deepest first (len(down_blocks) + 1).
      normalization: 'InstanceNorm++' in every original config (`normalization.get_normalization`).
      nonlinearity: 'elu' in every original config.
      interpolation: 'bilinear' or 'nearest_neighbor' (MSF resizing).
      centered: inputs already in [-1, 1]; otherwise x ∈ [0, 1] is mapped to 2x - 1.
      scale_by_sigma: divide the output by σ[label] (descending VE table, integer labels).
      sigma_min, sigma_max, num_scales: the VE noise table; num_scales also sizes the label
        embeddings of the conditional (NCSN v1) normalizations.
      conditional: noise-conditional normalizations everywhere (NCSN v1).
    """

    nf: int = 128
    down_blocks: tuple[tuple[int, int], ...] = _VARIANTS["ncsnv2_64"][0]
    refine_mults: tuple[int, ...] = _VARIANTS["ncsnv2_64"][1]
    normalization: str = "InstanceNorm++"
    nonlinearity: str = "elu"
    interpolation: str = "bilinear"
    centered: bool = False
    scale_by_sigma: bool = True
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 232
    conditional: bool = False

    @classmethod
    def from_config(cls, config):
        """Builds the variant named by ``config.model.name`` from an original-style config."""
        m = config.model
        if m.name not in _VARIANTS:
            raise ValueError(f"Unknown NCSN variant {m.name!r}; valid names: {sorted(_VARIANTS)}.")
        conditional = m.name == "ncsn"
        if conditional and m.get("num_classes", m.num_scales) != m.num_scales:
            raise ValueError(
                "NCSN v1 conditions on the noise level: model.num_classes must equal "
                f"model.num_scales ({m.num_scales}), got {m.num_classes}."
            )
        down_blocks, refine_mults = _VARIANTS[m.name]
        return cls(
            nf=m.nf,
            down_blocks=down_blocks,
            refine_mults=refine_mults,
            normalization=m.normalization,
            nonlinearity=m.nonlinearity,
            interpolation=m.get("interpolation", "bilinear"),
            centered=config.data.centered,
            # The NCSN v1 configs do not scale by sigma (docs/original_code.md#networks).
            scale_by_sigma=m.get("scale_by_sigma", False) if conditional else m.scale_by_sigma,
            sigma_min=m.sigma_min,
            sigma_max=m.sigma_max,
            num_scales=m.num_scales,
            conditional=conditional,
        )

    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        """Raw network output (the score when ``scale_by_sigma``).

        Args:
          x: images [B, H, W, C].
          labels: [B] integer noise-level indices (0 = σ_max).
          train: unused (no dropout or batch statistics); kept for the common interface.
        """
        if len(self.refine_mults) != len(self.down_blocks) + 1:
            raise ValueError(
                f"refine_mults needs len(down_blocks) + 1 = {len(self.down_blocks) + 1} entries, "
                f"got {self.refine_mults}."
            )
        nf, act = self.nf, get_act(self.nonlinearity)
        norm = get_normalization(self.normalization, self.conditional, self.num_scales)
        if self.conditional:

            def residual(out, resample=None, dilation=1):
                block = ConditionalResidualBlock(out, norm, resample, act, dilation)
                return lambda h: block(h, labels)

            def refine(shape, features, start=False, end=False):
                block = CondRefineBlock(shape, features, norm, act, self.interpolation, start, end)
                return lambda hs: block(hs, labels)

            def final_norm(h):
                return norm()(h, labels)
        else:

            def residual(out, resample=None, dilation=1):
                return ResidualBlock(out, norm, resample, act, dilation)

            def refine(shape, features, start=False, end=False):
                return RefineBlock(shape, features, act, self.interpolation, start, end)

            def final_norm(h):
                return norm()(h)

        h = x if self.centered else 2 * x - 1.0
        h = ncsn_conv3x3(h, nf)

        # ResNet backbone.
        h = residual(nf)(h)
        layers = [residual(nf)(h)]
        for mult, dilation in self.down_blocks:
            h = residual(mult * nf, "down", dilation)(layers[-1])
            layers.append(residual(mult * nf, dilation=dilation)(h))

        # RefineNet decoder, deepest level first.
        ref = refine(layers[-1].shape[1:3], self.refine_mults[0] * nf, start=True)([layers[-1]])
        for i, layer in enumerate(reversed(layers[:-1])):
            is_last = i == len(layers) - 2
            ref = refine(layer.shape[1:3], self.refine_mults[i + 1] * nf, end=is_last)([layer, ref])

        h = ncsn_conv3x3(act(final_norm(ref)), x.shape[-1])
        if self.scale_by_sigma:
            h = h / sigmas_of_labels(labels, self.sigma_min, self.sigma_max, self.num_scales)
        return h


@register_model("ncsn")
class NCSN(NCSNv2):
    """NCSN v1: `NCSNv2` topology with noise-conditional normalizations, no output scaling."""

    scale_by_sigma: bool = False
    conditional: bool = True
