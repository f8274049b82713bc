"""Deformable transformer: multi-scale deformable encoder, decoder with iterative box refinement,
and the optional two-stage proposal generation (Zhu et al., Deformable DETR).

Module and parameter names follow the Deformable DETR / SOLQ code so that official checkpoints
load by name (see ``convert.py``). Difference: the box / class heads used for refinement and
two-stage are passed to ``forward`` instead of being attached to the decoder.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .deform_attn import MSDeformAttn, SpatialShapes


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x) with x clamped to [0, 1] and both x and 1 - x clamped to >= eps."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


class DeformableTransformerEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention over all levels, then FFN."""

    def __init__(self, d_model=256, d_ffn=1024, dropout=0.1, n_levels=4, n_heads=8, n_points=4):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes: SpatialShapes, padding_mask=None):
        """src, pos: (N, S, C); reference_points (N, S, L, 2); padding_mask (N, S) -> (N, S, C)."""
        src2 = self.self_attn(src + pos, reference_points, src, spatial_shapes, padding_mask)
        src = self.norm1(src + self.dropout1(src2))
        src2 = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(src2))


class DeformableTransformerEncoder(nn.Module):
    def __init__(self, encoder_layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers

    @staticmethod
    def get_reference_points(spatial_shapes: SpatialShapes, valid_ratios: torch.Tensor) -> torch.Tensor:
        """Pixel centres of every level, normalised by the valid extent, then re-expressed on each
        level: (N, S, L, 2) (x, y)."""
        device = valid_ratios.device
        refs = []
        for lvl, (h, w) in enumerate(spatial_shapes):
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
                torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
                indexing="ij",
            )
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            refs.append(torch.stack((ref_x, ref_y), -1))
        ref = torch.cat(refs, 1)
        return ref[:, :, None] * valid_ratios[:, None]

    def forward(self, src, spatial_shapes, valid_ratios, pos, padding_mask):
        output = src
        reference_points = self.get_reference_points(spatial_shapes, valid_ratios).to(src.dtype)
        for layer in self.layers:
            output = layer(output, pos, reference_points, spatial_shapes, padding_mask)
        return output


class DeformableTransformerDecoderLayer(nn.Module):
    """Post-norm layer: query self-attention (nn.MultiheadAttention), deformable cross-attention, FFN."""

    def __init__(self, d_model=256, d_ffn=1024, dropout=0.1, n_levels=4, n_heads=8, n_points=4):
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt, query_pos, reference_points, src, spatial_shapes: SpatialShapes, src_padding_mask=None):
        """tgt, query_pos: (N, Q, C); reference_points (N, Q, L, 2|4); src (N, S, C) -> (N, Q, C)."""
        q = k = tgt + query_pos
        tgt2 = self.self_attn(q.transpose(0, 1), k.transpose(0, 1), tgt.transpose(0, 1))[0].transpose(0, 1)
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        tgt2 = self.cross_attn(tgt + query_pos, reference_points, src, spatial_shapes, src_padding_mask)
        tgt = self.norm1(tgt + self.dropout1(tgt2))
        tgt2 = self.linear2(self.dropout3(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(tgt2))


class DeformableTransformerDecoder(nn.Module):
    def __init__(self, decoder_layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers

    def forward(self, tgt, reference_points, src, spatial_shapes, valid_ratios, query_pos, src_padding_mask,
                bbox_embed: nn.ModuleList | None = None):
        """Returns hs (L, N, Q, C) and the reference points *entering* each following layer
        (L, N, Q, 2|4); with ``bbox_embed`` the reference boxes are refined after every layer
        (``sigmoid(delta + inverse_sigmoid(ref))``) and detached."""
        output = tgt
        intermediate, intermediate_refs = [], []
        for lid, layer in enumerate(self.layers):
            if reference_points.shape[-1] == 4:
                ref_in = reference_points[:, :, None] * torch.cat([valid_ratios, valid_ratios], -1)[:, None]
            else:
                ref_in = reference_points[:, :, None] * valid_ratios[:, None]
            output = layer(output, query_pos, ref_in, src, spatial_shapes, src_padding_mask)
            if bbox_embed is not None:
                delta = bbox_embed[lid](output)
                if reference_points.shape[-1] == 4:
                    new_ref = (delta + inverse_sigmoid(reference_points)).sigmoid()
                else:
                    new_ref = torch.cat([delta[..., :2] + inverse_sigmoid(reference_points), delta[..., 2:]], -1)
                    new_ref = new_ref.sigmoid()
                reference_points = new_ref.detach()
            intermediate.append(output)
            intermediate_refs.append(reference_points)
        return torch.stack(intermediate), torch.stack(intermediate_refs)


class DeformableTransformer(nn.Module):
    """Encoder + decoder over a list of multi-scale feature maps.

    Args:
        d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout:
            the usual transformer hyper-parameters.
        num_feature_levels: L.
        dec_n_points, enc_n_points: sampling points per head and level.
        two_stage: generate the decoder queries from the top-scoring encoder proposals.
        two_stage_num_proposals: number of proposals (= queries) in two-stage mode.
    """

    def __init__(self, d_model=256, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=1024,
                 dropout=0.1, num_feature_levels=4, dec_n_points=4, enc_n_points=4, two_stage=False,
                 two_stage_num_proposals=300):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.two_stage = two_stage
        self.two_stage_num_proposals = two_stage_num_proposals
        enc_layer = DeformableTransformerEncoderLayer(d_model, dim_feedforward, dropout, num_feature_levels, nhead,
                                                      enc_n_points)
        self.encoder = DeformableTransformerEncoder(enc_layer, num_encoder_layers)
        dec_layer = DeformableTransformerDecoderLayer(d_model, dim_feedforward, dropout, num_feature_levels, nhead,
                                                      dec_n_points)
        self.decoder = DeformableTransformerDecoder(dec_layer, num_decoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        if two_stage:
            self.enc_output = nn.Linear(d_model, d_model)
            self.enc_output_norm = nn.LayerNorm(d_model)
            self.pos_trans = nn.Linear(d_model * 2, d_model * 2)
            self.pos_trans_norm = nn.LayerNorm(d_model * 2)
        else:
            self.reference_points = nn.Linear(d_model, 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        if not self.two_stage:
            nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
            nn.init.zeros_(self.reference_points.bias)
        nn.init.normal_(self.level_embed)

    @staticmethod
    def get_valid_ratio(mask: torch.Tensor) -> torch.Tensor:
        """mask (N, h, w) True on padding -> (N, 2) valid (w, h) fractions."""
        _, h, w = mask.shape
        valid_h = (~mask[:, :, 0]).sum(1).float() / h
        valid_w = (~mask[:, 0, :]).sum(1).float() / w
        return torch.stack([valid_w, valid_h], -1)

    def get_proposal_pos_embed(self, proposals: torch.Tensor) -> torch.Tensor:
        """(N, K, 4) unactivated boxes -> (N, K, 4 * d_model / 2) sine embedding."""
        num_pos_feats = self.d_model // 2
        dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=proposals.device)
        dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
        pos = proposals.sigmoid()[..., None] * (2 * math.pi) / dim_t
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=4).flatten(2)

    def gen_encoder_output_proposals(self, memory, padding_mask, spatial_shapes: SpatialShapes):
        """One proposal per encoder position: centre = pixel centre, size 0.05 * 2^level
        (unactivated; +inf where invalid), and the normalised memory."""
        n = memory.shape[0]
        proposals, start = [], 0
        for lvl, (h, w) in enumerate(spatial_shapes):
            m = padding_mask[:, start:start + h * w].view(n, h, w)
            valid_h = (~m[:, :, 0]).sum(1)
            valid_w = (~m[:, 0, :]).sum(1)
            gy, gx = torch.meshgrid(
                torch.linspace(0, h - 1, h, dtype=torch.float32, device=memory.device),
                torch.linspace(0, w - 1, w, dtype=torch.float32, device=memory.device),
                indexing="ij",
            )
            grid = torch.stack([gx, gy], -1)
            scale = torch.stack([valid_w, valid_h], 1).view(n, 1, 1, 2)
            grid = (grid[None].expand(n, -1, -1, -1) + 0.5) / scale
            wh = torch.ones_like(grid) * 0.05 * (2.0 ** lvl)
            proposals.append(torch.cat((grid, wh), -1).view(n, -1, 4))
            start += h * w
        proposals = torch.cat(proposals, 1)
        valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
        proposals = torch.log(proposals / (1 - proposals))
        proposals = proposals.masked_fill(padding_mask[..., None], float("inf"))
        proposals = proposals.masked_fill(~valid, float("inf"))
        out_memory = memory.masked_fill(padding_mask[..., None], 0.0).masked_fill(~valid, 0.0)
        out_memory = self.enc_output_norm(self.enc_output(out_memory))
        return out_memory, proposals, valid[..., 0] & ~padding_mask

    def forward(self, srcs, masks, pos_embeds, query_embed=None, bbox_embed=None, class_embed=None):
        """
        Args:
            srcs: L maps (N, C, h_l, w_l); masks: L bool (N, h_l, w_l); pos_embeds: L (N, C, h_l, w_l).
            query_embed: (Q, 2C) [positional | content] query parameters (single-stage).
            bbox_embed: per-decoder-layer box heads for iterative refinement (None: no refinement);
                in two-stage mode it must hold one more head (index num_decoder_layers) for proposals.
            class_embed: two-stage only, the class heads (index num_decoder_layers scores proposals).

        Returns:
            hs (Ld, N, Q, C), init_reference (N, Q, 2|4), inter_references (Ld, N, Q, 2|4),
            enc_outputs_class (N, S, K) or None, enc_outputs_coord_unact (N, S, 4) or None.
        """
        if not self.two_stage and query_embed is None:
            raise ValueError("query_embed is required when two_stage=False")
        spatial_shapes = [tuple(int(v) for v in s.shape[-2:]) for s in srcs]
        src_flatten = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        mask_flatten = torch.cat([m.flatten(1) for m in masks], 1)
        pos_flatten = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1) for lvl, p in enumerate(pos_embeds)],
            1,
        )
        valid_ratios = torch.stack([self.get_valid_ratio(m) for m in masks], 1)

        memory = self.encoder(src_flatten, spatial_shapes, valid_ratios, pos_flatten, mask_flatten)

        n, _, c = memory.shape
        enc_class = enc_coord_unact = None
        if self.two_stage:
            if bbox_embed is None or class_embed is None:
                raise ValueError("two_stage needs bbox_embed and class_embed heads")
            out_memory, proposals, valid = self.gen_encoder_output_proposals(memory, mask_flatten, spatial_shapes)
            nl = self.decoder.num_layers
            enc_class = class_embed[nl](out_memory)
            enc_coord_unact = bbox_embed[nl](out_memory) + proposals
            # never select invalid (infinite) proposals while valid ones remain
            scores = enc_class[..., 0].masked_fill(~valid, float("-inf"))
            topk = torch.topk(scores, self.two_stage_num_proposals, dim=1)[1]
            topk_coords = torch.gather(enc_coord_unact, 1, topk[..., None].expand(-1, -1, 4)).detach()
            reference_points = topk_coords.sigmoid()
            pos_trans = self.pos_trans_norm(self.pos_trans(self.get_proposal_pos_embed(topk_coords)))
            query_pos, tgt = torch.split(pos_trans, c, dim=2)
        else:
            query_pos, tgt = torch.split(query_embed, c, dim=1)
            query_pos = query_pos[None].expand(n, -1, -1)
            tgt = tgt[None].expand(n, -1, -1)
            reference_points = self.reference_points(query_pos).sigmoid()
        init_reference = reference_points
        hs, inter_references = self.decoder(tgt, reference_points, memory, spatial_shapes, valid_ratios, query_pos,
                                            mask_flatten, bbox_embed)
        return hs, init_reference, inter_references, enc_class, enc_coord_unact
