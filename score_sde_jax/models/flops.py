"""Model FLOPs: the multiply-adds of a function's convolutions and matrix products, counted on
its jaxpr, so the same number on every backend (docs/performance.md#model-flops).

XLA's cost analysis of a compiled program is not that: it counts what one backend's optimised
program executes, and on GPUs it leaves out the convolutions that become library calls, so a
step's "FLOPs" differ several-fold between CPU and GPU. Here a convolution or ``dot_general``
counts 2 FLOPs per multiply-add of its definition (an input-dilated — transposed — convolution
only the products with non-inserted inputs); elementwise work, normalisation and softmax are not
model FLOPs. Loops count their body times their trip count (`lax.scan`); a ``while_loop`` whose
trip count is unknown counts once. Rematerialised forward passes appear in the jaxpr of a
gradient and count: count a network without ``remat`` for model FLOPs utilisation.
"""

import math

import jax
from jax.extend import core


def _dot_flops(eqn) -> int:
    (lhs_contract, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    out = eqn.outvars[0].aval.shape
    del lhs_batch, rhs
    # out = batch × lhs free × rhs free; each element sums over the contracted dimensions.
    return 2 * math.prod(out) * math.prod(lhs[d] for d in lhs_contract)


def _conv_flops(eqn) -> int:
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    out = eqn.outvars[0].aval.shape
    dims = eqn.params["dimension_numbers"]
    kernel_spatial = math.prod(rhs[d] for d in dims.rhs_spec[2:])
    c_in_per_group = rhs[dims.rhs_spec[1]]
    dilation = math.prod(eqn.params["lhs_dilation"] or (1,))
    # Every output element sums kernel_spatial × C_in/groups products (batch groups included in
    # the output size); with input dilation d only 1/d of the taps meet real inputs.
    return 2 * math.prod(out) * kernel_spatial * c_in_per_group // dilation


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, tuple | list) else (value,):
            if isinstance(item, core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, core.Jaxpr):
                yield item


def jaxpr_flops(jaxpr) -> int:
    """Model FLOPs of a (closed) jaxpr; see the module docstring."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "cond":  # one branch runs: count the dearest
            total += max(jaxpr_flops(branch) for branch in eqn.params["branches"])
        else:
            times = eqn.params.get("length", 1) if name == "scan" else 1
            total += times * sum(jaxpr_flops(sub) for sub in _sub_jaxprs(eqn))
    return total


def count_flops(fn, *args, **kwargs) -> int:
    """Model FLOPs of one call ``fn(*args, **kwargs)`` (arrays or `jax.ShapeDtypeStruct`s)."""
    return jaxpr_flops(jax.make_jaxpr(lambda *a: fn(*a, **kwargs))(*args))


def mfu(flops: float, seconds: float, peak_flops_per_s: float | None) -> float | None:
    """Model FLOP utilisation: achieved model FLOP/s over a device's dense peak (None if unknown)."""
    if not peak_flops_per_s or seconds <= 0:
        return None
    return flops / seconds / peak_flops_per_s
