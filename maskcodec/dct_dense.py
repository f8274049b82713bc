"""Dense DCT encode of numpy masks: a numba kernel on 8-lane float32 registers that uses the basis's
even/odd symmetry (decode: ``maskcodec.dct_decode``).

The DCT-II basis satisfies A[h, N-1-l] = (-1)^h A[h, l]. So with the butterflies
S[i] = X[i] + X[N-1-i] and D[i] = X[i] - X[N-1-i] of the mask rows (i < N/2), the column
transform is A[h, :N/2] S (h even) and A[h, :N/2] D (h odd): half the multiply-adds of the plain
product; the row transform folds its columns the same way.

Every product is an outer product on ``maskcodec.float8`` registers: a broadcast scalar times 8
contiguous values, 8 accumulators per tile, no horizontal sums. Encode works on 16-column panels
of the mask (its butterflies, validated by one unsigned max of the bit patterns per value, then 4
row frequencies x 2 blocks per sweep), prefetching the next mask meanwhile; then the folded
columns times the transposed column basis, only at the column blocks the zigzag prefix needs.
Float64 masks and N that is not a multiple of 8 are staged through a padded float32 copy (values
checked before rounding). Loops that matter stay in one function body: numba's reference counting
of the arrays passed to inlined helpers costs calls inside the loops.

Results equal ``DCTCodec``'s GEMM path (``DCTCodec._encode_dense``) up to float32 rounding. numba
compiles on first use (``cache=True`` keeps it on disk; after editing ``maskcodec.float8`` delete
``maskcodec/__pycache__/dct_*.nb[ic]``); ``maskcodec.dct`` imports this module lazily.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .dct_basis import KERNEL_FASTMATH, dct_matrix, read_only, zigzag_indices
from .float8 import LANES, add8, fma8, load8, max_bits, max_bits8, prefetch, reverse8, store8, sub8, zero8
from .parallel import MASKS_PER_ITEM, parallel_over_masks

_GROUP = 4  # row frequencies per sweep of the encode column pass


@functools.lru_cache(maxsize=16)
def encode_tables(n: int, k: int) -> tuple[np.ndarray, ...]:
    """Constants of ``encode_dense`` for ``n x n`` masks and ``k`` coefficients (H = (N+1)//2).

    The row frequencies go in groups of 4 of one parity (h0, h0+2, h0+4, h0+6). ``weights``: each
    group's frequencies on the top half, (groups, H, 4) float32 flattened (odd ones zero at the
    middle row of odd N); ``parity``: 0/1 per group; ``basis``: the even, then from C/2 the odd
    column frequencies on the left half, transposed, (H, C) float32 flattened, C/2 a multiple of 8
    (zero-padded; odd ones zero at the middle column of odd N); ``blocks``: the 8-wide blocks of a
    spectrum row of C that each group needs, group g's at ``blocks[starts[g]:starts[g + 1]]``, in
    pairs of one parity (the last one repeated where a parity has an odd count); ``position``:
    flat index into the (4 x groups, C) spectrum of each zigzag coefficient.
    """
    zz = zigzag_indices(n, k)
    zr, zc = zz[:, 0], zz[:, 1]
    kr, kc = int(zr.max()) + 1, int(zc.max()) + 1
    dct = dct_matrix(n)
    half, nl = (n + 1) // 2, n // 2
    width = LANES * -(-((kc + 1) // 2) // LANES)  # C/2
    basis = np.zeros((half, 2 * width), np.float32)
    basis[:, : (kc + 1) // 2] = dct[0:kc:2, :half].T
    basis[:nl, width: width + kc // 2] = dct[1:kc:2, :nl].T
    col = np.where(zc % 2 == 0, zc // 2, width + zc // 2)
    weights, parity, blocks, starts, position = [], [], [], [0], np.zeros(k, np.int64)
    for p in (0, 1):
        for h0 in range(p, kr, 2 * _GROUP):
            g = len(parity)
            hs = list(range(h0, h0 + 2 * _GROUP, 2))
            w = np.zeros((half, _GROUP), np.float32)
            for r, h in enumerate(hs):
                if h < kr:
                    w[:, r] = dct[h, :half]
                    if n % 2 and h % 2:
                        w[nl, r] = 0.0  # exactly: cos(pi * h / 2)
            weights.append(w)
            parity.append(p)
            member = np.isin(zr, hs)
            position[member] = (_GROUP * g + (zr[member] - h0) // 2) * 2 * width + col[member]
            for side in (col[member] < width, col[member] >= width):
                needed = sorted({c // LANES * LANES for c in col[member][side]})
                blocks.extend(needed + needed[-1:] * (len(needed) % 2))
            starts.append(len(blocks))
    return read_only(np.stack(weights).ravel(), np.array(parity, np.int64), basis.ravel(),
                   np.array(blocks, np.int64), np.array(starts, np.int64), position)


def encode_dense(masks: np.ndarray, n_components: int, which: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Zigzag DCT coefficients of numpy masks ``(B, N, N)`` float32 or float64 (any values).

    ``which``: int64 indices of the masks to encode (default: all), so that a subset needs no
    gather copy. Returns ``(vectors (len(which), n_components) float32, valid)``; ``valid`` is
    False when a value of those masks lies outside [0, 1] or is NaN or infinite (the vectors are
    then meaningless). Batches of at least 256 masks are split over numba's threads.
    """
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2] or masks.dtype not in (np.float32, np.float64):
        raise ValueError(f"encode_dense takes (B, N, N) float32 or float64 masks, got {masks.shape} {masks.dtype}")
    n = masks.shape[1]
    everything = which is None
    which = np.arange(masks.shape[0]) if everything else np.asarray(which, dtype=np.int64)
    b = which.shape[0]
    if which.ndim != 1 or (b and not 0 <= which.min() <= which.max() < masks.shape[0]):
        raise ValueError(f"which must be indices into the {masks.shape[0]} masks, got {which!r:.80}")
    out = np.empty((b, n_components), np.float32)
    if b == 0:
        return out, True
    masks = np.ascontiguousarray(masks)
    bits = masks.view(np.uint32 if masks.dtype == np.float32 else np.uint64)
    staged = masks.dtype != np.float32 or n % LANES != 0
    args = (which, masks, bits, staged, *encode_tables(n, n_components), out)
    if parallel_over_masks(b):
        largest = _encode_parallel(b, MASKS_PER_ITEM, *args)
    else:
        largest = _encode_range(0, b, *args)
    # Every value in [0, 1] has a bit pattern at most that of 1.0 (no sign bit; NaN and infinity
    # lie above). A larger one is a bad value or a negative zero: only then a full check.
    if largest <= np.array(1.0, masks.dtype).view(bits.dtype):
        return out, True
    subset = masks if everything else masks[which]
    return out, bool(((subset >= 0.0) & (subset <= 1.0)).all())


# ------------------------------------------------------------------------------------------ kernels
# One function per stage and mask: array arguments of helpers inlined into loops cost reference
# counting calls per use (measured: half the decode time), so each vector loop stays in one body.
# The dtype-specific helpers are numba overloads.
def _float32_view(masks):  # pragma: no cover - numba
    """``masks`` as a flat float32 array (an empty one for float64 masks, which are staged)."""


@overload(_float32_view)
def _float32_view_typed(masks):
    if masks.dtype == types.float32:
        return lambda masks: masks.reshape(-1)
    return lambda masks: np.zeros(0, np.float32)


@njit(fastmath=KERNEL_FASTMATH, cache=True, nogil=True)
def _stage(masks, bits, m, stride, buffer, largest):  # pragma: no cover - numba
    """Copy mask m into ``buffer`` (N rows of ``stride`` float32, zero-padded) and return the largest
    of ``largest`` and its bit patterns: for float64 masks (checked before rounding) and N that is
    not a multiple of 8."""
    n = masks.shape[1]
    for i in range(n):
        row, row_bits = masks[m, i], bits[m, i]
        at = np.uint64(i * stride)
        for ls in range(n):
            lu = np.uint64(ls)
            largest = max(largest, row_bits[lu])
            buffer[at + lu] = np.float32(row[lu])
    return largest


@njit(fastmath=KERNEL_FASTMATH, cache=True, nogil=True)
def _column_transform(src, base, ahead, stride, n, weights, parity, panel, spatial):  # pragma: no cover - numba
    """spatial[4g + r, l] = sum_i weights[g, i, r] (x[i, l] + x[N-1-i, l]) (even frequencies; odd
    ones with x[i, l] - x[N-1-i, l]) for every column l, x the mask at ``src[base:]`` (rows of
    ``stride``). Panels of 16 columns: their butterflies into ``panel``, then per group 4 row
    frequencies x 2 blocks = 8 accumulators; the same lines of the mask at ``src[ahead:]`` are
    prefetched meanwhile. Returns the largest bit pattern of x (uint32)."""
    half, nl = (n + 1) // 2, n // 2
    diff = half * 2 * LANES
    high = zero8()
    for q0 in range(0, stride, 2 * LANES):
        q1 = min(q0 + LANES, stride - LANES)
        for i in range(nl):
            top, bot = base + i * stride, base + (n - 1 - i) * stride
            prefetch(src, top - base + ahead + q0), prefetch(src, top - base + ahead + q1)
            prefetch(src, bot - base + ahead + q0), prefetch(src, bot - base + ahead + q1)
            a0, a1, b0, b1 = load8(src, top + q0), load8(src, top + q1), load8(src, bot + q0), load8(src, bot + q1)
            high = max_bits8(high, max_bits8(max_bits8(a0, a1), max_bits8(b0, b1)))
            p = i * 2 * LANES
            store8(panel, p, add8(a0, b0)), store8(panel, p + LANES, add8(a1, b1))
            store8(panel, diff + p, sub8(a0, b0)), store8(panel, diff + p + LANES, sub8(a1, b1))
        if n % 2:  # the middle row: only the even frequencies meet it
            a0, a1 = load8(src, base + nl * stride + q0), load8(src, base + nl * stride + q1)
            high = max_bits8(high, max_bits8(a0, a1))
            p = nl * 2 * LANES
            store8(panel, p, a0), store8(panel, p + LANES, a1)
            store8(panel, diff + p, zero8()), store8(panel, diff + p + LANES, zero8())
        for g in range(parity.shape[0]):
            part = parity[g] * diff
            w = np.uint64(g * half * _GROUP)
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = zero8()
            for i in range(half):
                x, y = load8(panel, part + i * 2 * LANES), load8(panel, part + i * 2 * LANES + LANES)
                w0, w1, w2, w3 = weights[w], weights[w + np.uint64(1)], weights[w + np.uint64(2)], \
                    weights[w + np.uint64(3)]
                w += np.uint64(_GROUP)
                a0, a1, a2, a3 = fma8(a0, w0, x), fma8(a1, w1, x), fma8(a2, w2, x), fma8(a3, w3, x)
                b0, b1, b2, b3 = fma8(b0, w0, y), fma8(b1, w1, y), fma8(b2, w2, y), fma8(b3, w3, y)
            out = _GROUP * g * stride
            store8(spatial, out + q0, a0), store8(spatial, out + stride + q0, a1)
            store8(spatial, out + 2 * stride + q0, a2), store8(spatial, out + 3 * stride + q0, a3)
            store8(spatial, out + q1, b0), store8(spatial, out + stride + q1, b1)
            store8(spatial, out + 2 * stride + q1, b2), store8(spatial, out + 3 * stride + q1, b3)
    return max_bits(high)


@njit(fastmath=KERNEL_FASTMATH, cache=True, nogil=True)
def _fold_columns(spatial, stride, n, folded):  # pragma: no cover - numba
    """folded[r, 0, l] = s[r, l] + s[r, N-1-l], folded[r, 1, l] = s[r, l] - s[r, N-1-l] for l < N/2
    (for odd N: s[r, N//2] and 0 at l = N//2), rows of H' = folded row length / 2: the
    butterflies of the row transform, which the column basis's symmetry turns into half rows."""
    rows = spatial.shape[0] // stride
    hp = folded.shape[0] // (2 * rows)
    nl = n // 2
    for r in range(rows):
        for q in range(0, nl - LANES + 1, LANES):  # 8 columns and their lane-reversed mirror
            a, b = load8(spatial, r * stride + q), reverse8(load8(spatial, r * stride + n - LANES - q))
            store8(folded, r * 2 * hp + q, add8(a, b)), store8(folded, r * 2 * hp + hp + q, sub8(a, b))
        src, dst = np.uint64(r * stride), np.uint64(r * 2 * hp)
        for ls in range(nl - nl % LANES, nl):
            lu = np.uint64(ls)
            a, b = spatial[src + lu], spatial[src + np.uint64(n - 1 - ls)]
            folded[dst + lu] = a + b
            folded[dst + np.uint64(hp) + lu] = a - b
        if n % 2:
            folded[dst + np.uint64(nl)] = spatial[src + np.uint64(nl)]
            folded[dst + np.uint64(hp + nl)] = 0.0


@njit(fastmath=KERNEL_FASTMATH, cache=True, nogil=True)
def _row_transform(folded, basis, blocks, starts, spectrum):  # pragma: no cover - numba
    """spectrum[4g + r, q] = sum_l folded[4g + r, part, l] basis[l, q] for the blocks q that group
    g needs (part 0 for the even column frequencies, q < C/2, 1 for the odd ones): a broadcast
    folded value times a row of the transposed basis, 4 rows x 2 blocks = 8 accumulators."""
    c = spectrum.shape[0] // (_GROUP * (starts.shape[0] - 1))
    half = basis.shape[0] // c
    hp = folded.shape[0] // (2 * _GROUP * (starts.shape[0] - 1))
    for g in range(starts.shape[0] - 1):
        for b in range(starts[g], starts[g + 1], 2):
            q0, q1 = blocks[b], blocks[b + 1]
            f = np.uint64(_GROUP * g * 2 * hp + (hp if 2 * q0 >= c else 0))
            step = np.uint64(2 * hp)
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = zero8()
            for ls in range(half):
                lu = np.uint64(ls)
                w0, w1, w2, w3 = folded[f + lu], folded[f + step + lu], folded[f + 2 * step + lu], \
                    folded[f + 3 * step + lu]
                x, y = load8(basis, ls * c + q0), load8(basis, ls * c + q1)
                a0, a1, a2, a3 = fma8(a0, w0, x), fma8(a1, w1, x), fma8(a2, w2, x), fma8(a3, w3, x)
                b0, b1, b2, b3 = fma8(b0, w0, y), fma8(b1, w1, y), fma8(b2, w2, y), fma8(b3, w3, y)
            out = _GROUP * g * c
            store8(spectrum, out + q0, a0), store8(spectrum, out + c + q0, a1)
            store8(spectrum, out + 2 * c + q0, a2), store8(spectrum, out + 3 * c + q0, a3)
            store8(spectrum, out + q1, b0), store8(spectrum, out + c + q1, b1)
            store8(spectrum, out + 2 * c + q1, b2), store8(spectrum, out + 3 * c + q1, b3)


@njit(fastmath=KERNEL_FASTMATH, cache=True, nogil=True)
def _encode_range(start, stop, which, masks, bits, staged, weights, parity, basis, blocks, starts, position,
                  out):  # pragma: no cover - numba
    """Encode masks ``which[start:stop]`` serially into ``out[start:stop]``; returns the largest bit
    pattern of their values. ``staged``: copy each mask into a float32 buffer first (float64, or
    N not a multiple of 8)."""
    n = masks.shape[1]
    half = (n + 1) // 2
    stride = LANES * -(-n // LANES)
    rows = _GROUP * parity.shape[0]
    c = basis.shape[0] // half
    direct = _float32_view(masks)
    buffer = np.zeros(n * stride if staged else 0, np.float32)
    panel = np.zeros(2 * half * 2 * LANES, np.float32)
    spatial = np.zeros(rows * stride, np.float32)
    folded = np.zeros(rows * 2 * (half + half % 2), np.float32)
    spectrum = np.zeros(rows * c, np.float32)
    largest = bits[which[start], 0, 0]
    for t in range(start, stop):
        m = which[t]
        if staged:
            largest = _stage(masks, bits, m, stride, buffer, largest)
            _column_transform(buffer, 0, 0, stride, n, weights, parity, panel, spatial)
        else:
            ahead = which[min(t + 1, stop - 1)] * n * n  # the next mask
            high = _column_transform(direct, m * n * n, ahead, stride, n, weights, parity, panel, spatial)
            if high > largest:
                largest = high
        _fold_columns(spatial, stride, n, folded)
        _row_transform(folded, basis, blocks, starts, spectrum)
        for k in range(position.shape[0]):
            out[t, k] = spectrum[position[k]]
    return largest


@njit(parallel=True, cache=True)
def _encode_parallel(b, chunk, which, masks, bits, staged, weights, parity, basis, blocks, starts, position,
                     out):  # pragma: no cover - numba
    n_chunks = (b + chunk - 1) // chunk
    largest = np.zeros(n_chunks, bits.dtype)
    for c in prange(n_chunks):
        largest[c] = _encode_range(c * chunk, min(b, (c + 1) * chunk), which, masks, bits, staged, weights, parity,
                                   basis, blocks, starts, position, out)
    return largest.max()
