"""One ``torch.autograd.Function`` shape for every fused deformable-attention core.

A fused core is a pair ``forward(value, spatial_shapes, loc, attn) -> (N, Lq, M, D)`` and
``backward(value, spatial_shapes, loc, attn, grad_out) -> (grad_value, grad_loc, grad_attn)`` on
detached tensors; :func:`fused_core_function` wraps such a pair for autograd.
"""

from __future__ import annotations

from typing import Callable

import torch


def fused_core_function(name: str, forward: Callable, backward: Callable) -> type[torch.autograd.Function]:
    """An autograd Function whose ``apply(value, spatial_shapes, loc, attn)`` runs ``forward``/``backward``."""

    def _forward(ctx, value, spatial_shapes, loc, attn):
        ctx.spatial_shapes = spatial_shapes
        ctx.save_for_backward(value, loc, attn)
        return forward(value.detach(), spatial_shapes, loc.detach(), attn.detach())

    def _backward(ctx, grad_out):
        value, loc, attn = ctx.saved_tensors
        grads = backward(value.detach(), ctx.spatial_shapes, loc.detach(), attn.detach(),
                         grad_out.detach().contiguous())
        return grads[0], None, grads[1], grads[2]

    doc = f"``ms_deform_attn_core`` as the fused {name} kernel; inputs checked by the dispatcher."
    return type(f"MSDeformAttn{name.capitalize()}", (torch.autograd.Function,),
                {"forward": staticmethod(_forward), "backward": staticmethod(_backward), "__doc__": doc})
