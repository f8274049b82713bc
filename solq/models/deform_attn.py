"""Multi-scale deformable attention (Zhu et al., Deformable DETR) and its sampling core.

The core is a weighted sum of bilinear samples with ``F.grid_sample`` semantics (bilinear, zero
padding, ``align_corners=False``), so a sampling location ``(x, y)`` in [0, 1] maps to pixel
coordinate ``x * W - 0.5``: the centre of pixel ``j`` is ``x = (j + 0.5) / W``. It is
differentiable with respect to values, locations and weights, and has three backends (see
:mod:`solq.models.msda_backend`): the ``grid_sample`` reference below, a fused numba CPU kernel
and a fused Triton GPU kernel.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import msda_backend

SpatialShapes = Sequence[tuple[int, int]]

_FUSED_DTYPES = (torch.float32, torch.float64)


def ms_deform_attn_core(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str | None = None,
) -> torch.Tensor:
    """Weighted sum of bilinear samples over levels and points, on the chosen backend.

    Args:
        value: (N, S, M, D) values of all levels flattened row-major and concatenated,
            ``S = sum(h * w)``; M heads of D channels.
        spatial_shapes: L pairs (h_l, w_l).
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y) in [0, 1] of each level.
        attention_weights: (N, Lq, M, L, P), typically softmax-normalised over (L, P).
        backend: ``"auto"`` (default), ``"reference"``, ``"numba"`` or ``"triton"``; the
            ``SOLQ_MSDA_BACKEND`` environment variable overrides it (see :mod:`.msda_backend`).

    Returns:
        (N, Lq, M * D) in value's dtype. The fused backends compute in float32 or float64 (other
        or mixed dtypes, e.g. float16 under autocast, are computed in float32) and copy
        non-contiguous inputs.

    Raises:
        ValueError: shapes, dtypes or devices that do not fit, or a backend that cannot run here.
    """
    return ms_deform_attn_core_with_backend(value, spatial_shapes, sampling_locations, attention_weights,
                                            backend)[0]


def ms_deform_attn_core_with_backend(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str | None = None,
) -> tuple[torch.Tensor, str]:
    """:func:`ms_deform_attn_core` and the name of the backend that ran."""
    msda_backend.check_inputs(value, spatial_shapes, sampling_locations, attention_weights)
    name = msda_backend.resolve(backend, value.device)
    n, _, m, d = value.shape
    lq = sampling_locations.shape[1]
    if n * lq == 0 or m * d == 0:  # empty result, still connected to the inputs for autograd
        link = sum(t.reshape(-1)[:0].sum() for t in (value, sampling_locations, attention_weights))
        return value.new_zeros((n, lq, m * d)) + link.to(value.dtype), name
    if name == "reference":
        return ms_deform_attn_core_reference(value, spatial_shapes, sampling_locations, attention_weights), name
    shapes = [(int(h), int(w)) for h, w in spatial_shapes]
    dtype = value.dtype
    if not (dtype in _FUSED_DTYPES and sampling_locations.dtype == dtype and attention_weights.dtype == dtype):
        dtype = torch.float32
    args = [t.to(dtype).contiguous() for t in (value, sampling_locations, attention_weights)]
    if name == "numba":
        from .msda_numba import MSDeformAttnNumba as fused
    else:
        from .msda_triton import MSDeformAttnTriton as fused
    out = fused.apply(args[0], shapes, args[1], args[2])
    return out.view(n, lq, m * d).to(value.dtype), name


def ms_deform_attn_core_reference(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The pure-PyTorch core: ``grid_sample`` level by level (channel-first; any device).

    Args:
        value: (N, S, M, D) values of all levels flattened row-major and concatenated,
            ``S = sum(h * w)``; M heads of D channels.
        spatial_shapes: L pairs (h_l, w_l).
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y) in [0, 1] of each level.
        attention_weights: (N, Lq, M, L, P), typically softmax-normalised over (L, P).

    Returns:
        (N, Lq, M * D).
    """
    n, s, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes]
    if sum(sizes) != s:
        raise ValueError(f"value has {s} positions but spatial_shapes {list(spatial_shapes)} sum to {sum(sizes)}")
    values = value.split(sizes, dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample coordinates in [-1, 1]
    out = None
    for lvl, (h, w) in enumerate(spatial_shapes):
        # (N, h*w, M, D) -> (N*M, D, h, w)
        v = values[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, int(h), int(w))
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # (N*M, D, Lq, P)
        a = attention_weights[:, :, :, lvl].transpose(1, 2).reshape(n * m, 1, lq, n_points)
        contrib = (sampled * a).sum(-1)  # (N*M, D, Lq)
        out = contrib if out is None else out + contrib
    return out.view(n, m * d, lq).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module.

    Parameter names follow the Deformable DETR code (``sampling_offsets``, ``attention_weights``,
    ``value_proj``, ``output_proj``) so official checkpoints load by name.

    Args:
        d_model: channels; must be divisible by ``n_heads``.
        n_levels: number of feature levels.
        n_heads: attention heads.
        n_points: sampling points per head and level.
        backend: core backend, ``"auto"``, ``"reference"``, ``"numba"`` or ``"triton"``.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 backend: str = "auto"):
        super().__init__()
        #: core backend asked for (see :mod:`.msda_backend`) and the one the last forward ran
        self.backend = msda_backend.check_name(backend)
        self.last_backend: str | None = None
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets: zero weight, bias on a directional grid (head h points along angle 2πh/M,
        point p at distance p+1, in units of the level's pixels); attention weights zero; projections xavier."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        spatial_shapes: SpatialShapes,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            query: (N, Lq, C).
            reference_points: (N, Lq, L, 2) normalised (x, y) in [0, 1] per level, or
                (N, Lq, L, 4) boxes (cx, cy, w, h): offsets are then scaled by half the box size / P.
            input_flatten: (N, S, C) all levels flattened and concatenated.
            spatial_shapes: L pairs (h_l, w_l).
            input_padding_mask: (N, S) bool, True on padding (those values are zeroed).

        Returns:
            (N, Lq, C).
        """
        n, lq, _ = query.shape
        s = input_flatten.shape[1]
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: divide by (w_l, h_l)
            normalizer = torch.tensor(
                [[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device
            )
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(f"reference_points last dim must be 2 or 4, got {reference_points.shape[-1]}")
        out, self.last_backend = ms_deform_attn_core_with_backend(value, spatial_shapes, locations, weights,
                                                                  self.backend)
        return self.output_proj(out)


def set_attn_backend(model: nn.Module, backend: str) -> None:
    """Make every :class:`MSDeformAttn` inside ``model`` use core ``backend`` (see :mod:`.msda_backend`)."""
    msda_backend.check_name(backend)
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.backend = backend


def attn_backends_used(model: nn.Module) -> list[str]:
    """Sorted names of the core backends that the last forward of ``model``'s attention modules ran."""
    return sorted({m.last_backend for m in model.modules() if isinstance(m, MSDeformAttn) and m.last_backend})
