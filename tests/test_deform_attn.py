"""Multi-scale deformable attention: exact lookups at pixel centres, bilinear semantics, init."""


import pytest
import torch

from solq.models.deform_attn import MSDeformAttn, ms_deform_attn_core

SHAPES = [(5, 7), (3, 4)]


def _value(n=1, m=2, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in SHAPES)
    return torch.randn(n, s, m, d, generator=g)


def _lookup(value, level, i, j, head):
    start = sum(h * w for h, w in SHAPES[:level])
    w = SHAPES[level][1]
    return value[:, start + i * w + j, head]


@pytest.mark.parametrize("level,i,j", [(0, 0, 0), (0, 4, 6), (0, 2, 3), (1, 1, 2), (1, 2, 0)])
def test_core_pixel_centre_equals_lookup(level, i, j):
    value = _value()
    n, _, m, d = value.shape
    n_levels, n_points = len(SHAPES), 3
    h, w = SHAPES[level]
    loc = torch.rand(n, 1, m, n_levels, n_points, 2)
    loc[:, :, :, level, 1] = torch.tensor([(j + 0.5) / w, (i + 0.5) / h])
    attn = torch.zeros(n, 1, m, n_levels, n_points)
    attn[:, :, :, level, 1] = 1.0
    out = ms_deform_attn_core(value, SHAPES, loc, attn).view(n, 1, m, d)
    for head in range(m):
        torch.testing.assert_close(out[:, 0, head], _lookup(value, level, i, j, head), rtol=0, atol=1e-6)


def test_core_bilinear_between_centres_and_zero_padding():
    value = _value(m=1)
    h, w = SHAPES[0]
    attn = torch.zeros(1, 2, 1, 2, 1)
    attn[:, :, :, 0] = 1.0
    loc = torch.zeros(1, 2, 1, 2, 1, 2)
    # query 0: a quarter of the way from pixel (1, 2) to (2, 3) -> bilinear mix of 4 pixels
    loc[0, 0, 0, 0, 0] = torch.tensor([(2 + 0.5 + 0.25) / w, (1 + 0.5 + 0.25) / h])
    # query 1: half a pixel beyond the top-left corner centre -> half-weight on zero padding
    loc[0, 1, 0, 0, 0] = torch.tensor([0.5 / w, 0.0])
    out = ms_deform_attn_core(value, SHAPES, loc, attn)[0]
    v = lambda i, j: _lookup(value, 0, i, j, 0)[0]  # noqa: E731
    expected0 = 0.75 * 0.75 * v(1, 2) + 0.75 * 0.25 * v(1, 3) + 0.25 * 0.75 * v(2, 2) + 0.25 * 0.25 * v(2, 3)
    torch.testing.assert_close(out[0], expected0, rtol=0, atol=1e-6)
    torch.testing.assert_close(out[1], 0.5 * v(0, 0), rtol=0, atol=1e-6)


def test_module_offsets_in_level_pixels_hit_centres():
    """Reference at a pixel centre + an integer pixel offset lands on another centre of that level."""
    d_model, m, n_points = 4, 2, 2
    attn_mod = MSDeformAttn(d_model, n_levels=2, n_heads=m, n_points=n_points)
    with torch.no_grad():
        attn_mod.value_proj.weight.copy_(torch.eye(d_model)); attn_mod.value_proj.bias.zero_()
        attn_mod.output_proj.weight.copy_(torch.eye(d_model)); attn_mod.output_proj.bias.zero_()
        attn_mod.sampling_offsets.weight.zero_()
        attn_mod.attention_weights.weight.zero_()
        off = torch.zeros(m, 2, n_points, 2)
        logits = torch.full((m, 2, n_points), -1e4)
        # head 0 -> level 1, point 0, offset (+1 px in x, +1 px in y); head 1 -> level 0, point 1, offset (-2, +3)
        off[0, 1, 0] = torch.tensor([1.0, 1.0]); logits[0, 1, 0] = 0.0
        off[1, 0, 1] = torch.tensor([-2.0, 3.0]); logits[1, 0, 1] = 0.0
        attn_mod.sampling_offsets.bias.copy_(off.reshape(-1))
        attn_mod.attention_weights.bias.copy_(logits.reshape(-1))
    s = sum(h * w for h, w in SHAPES)
    src = torch.randn(1, s, d_model)
    (h0, w0), (h1, w1) = SHAPES
    # reference = centre of pixel (row 1, col 4) of level 0, and of pixel (row 0, col 1) of level 1
    ref = torch.tensor([[[[(4 + 0.5) / w0, (1 + 0.5) / h0], [(1 + 0.5) / w1, (0 + 0.5) / h1]]]])
    out = attn_mod(torch.zeros(1, 1, d_model), ref, src, SHAPES)[0, 0]
    dh = d_model // m
    lvl1 = src[0, h0 * w0:].view(h1, w1, d_model)
    lvl0 = src[0, :h0 * w0].view(h0, w0, d_model)
    torch.testing.assert_close(out[:dh], lvl1[1, 2, :dh], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[dh:], lvl0[4, 2, dh:], rtol=0, atol=1e-5)


def test_module_box_reference_scales_offsets():
    attn_mod = MSDeformAttn(8, n_levels=1, n_heads=1, n_points=2)
    with torch.no_grad():
        attn_mod.sampling_offsets.weight.zero_()
        attn_mod.sampling_offsets.bias.copy_(torch.tensor([2.0, -1.0, 0.0, 0.0]))
    seen = {}
    import solq.models.deform_attn as da
    orig = da.ms_deform_attn_core_with_backend

    def spy(value, shapes, loc, attn, backend):
        seen["loc"] = loc
        return orig(value, shapes, loc, attn, backend)

    da.ms_deform_attn_core_with_backend = spy
    try:
        ref = torch.tensor([[[[0.5, 0.4, 0.2, 0.6]]]])
        attn_mod(torch.zeros(1, 1, 8), ref, torch.randn(1, 12, 8), [(3, 4)])
    finally:
        da.ms_deform_attn_core_with_backend = orig
    # location = centre + offset / n_points * wh / 2
    torch.testing.assert_close(seen["loc"][0, 0, 0, 0, 0], torch.tensor([0.5 + 2.0 / 2 * 0.1, 0.4 - 1.0 / 2 * 0.3]))


def test_init_and_padding_mask_and_gradients():
    attn_mod = MSDeformAttn(16, n_levels=2, n_heads=4, n_points=3)
    bias = attn_mod.sampling_offsets.bias.view(4, 2, 3, 2)
    # head 0 points along +x, head 1 along +y (angle pi/2), distance p+1, identical across levels
    torch.testing.assert_close(bias[0, 1, :, 0], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(bias[1, 0, :, 1], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(bias[1, 0, :, 0], torch.zeros(3), atol=1e-6)
    assert attn_mod.attention_weights.weight.abs().sum() == 0 and attn_mod.attention_weights.bias.abs().sum() == 0
    assert attn_mod.sampling_offsets.weight.abs().sum() == 0
    s = sum(h * w for h, w in SHAPES)
    src = torch.randn(2, s, 16, requires_grad=True)
    mask = torch.zeros(2, s, dtype=torch.bool)
    mask[1] = True  # all padding -> the output is the output projection's bias only
    q = torch.randn(2, 5, 16, requires_grad=True)
    ref = torch.rand(2, 5, 2, 2)
    out = attn_mod(q, ref, src, SHAPES, mask)
    torch.testing.assert_close(out[1], attn_mod.output_proj.bias.expand(5, -1).detach())
    out.sum().backward()
    assert torch.isfinite(src.grad).all() and src.grad[0].abs().sum() > 0
    assert attn_mod.sampling_offsets.weight.grad.abs().sum() > 0


def test_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(10, n_heads=4)
    with pytest.raises(ValueError, match="spatial_shapes"):
        ms_deform_attn_core(torch.randn(1, 10, 1, 2), [(3, 3)], torch.rand(1, 1, 1, 1, 1, 2), torch.ones(1, 1, 1, 1, 1))


@pytest.mark.gpu
def test_cuda_matches_cpu():
    from maskcodec.backend import cuda_status

    ok, why = cuda_status()
    if not ok:
        pytest.skip(f"no CUDA: {why}")
    value, shapes = _value(n=2, m=2, d=4), SHAPES
    loc = torch.rand(2, 6, 2, 2, 3, 2)
    attn = torch.rand(2, 6, 2, 2, 3).softmax(-1)
    cpu = ms_deform_attn_core(value, shapes, loc, attn)
    gpu = ms_deform_attn_core(value.cuda(), shapes, loc.cuda(), attn.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)
