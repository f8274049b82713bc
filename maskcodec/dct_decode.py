"""Dense DCT decode to numpy masks: a numba kernel on 8-lane float32 registers that uses the basis's
even/odd symmetry (encode: ``maskcodec.dct_dense``).

The DCT-II basis satisfies A[h, N-1-l] = (-1)^h A[h, l], so output rows i and N-1-i are e + o and
e - o, e (o) the sum over the even (odd) row frequencies, and each row is e' + o' on its left half
and the mirror of e' - o' on its right half. The kernel forms the column-frequency coefficients of
every output row, then synthesises 2 rows x 2 column blocks per sweep on ``maskcodec.float8``
registers (8 accumulators, a broadcast coefficient times 8 basis values), writing the (B, N, N)
output once (the right halves lane-reversed) and prefetching the next row pair's output lines.
Loops that matter stay in one function body: numba's reference counting of the arrays passed to
inlined helpers costs calls inside the loops.

Results equal ``DCTCodec``'s GEMM path (torch decode) up to float32 rounding. numba compiles on
first use (``cache=True`` keeps it on disk; after editing ``maskcodec.float8`` delete
``maskcodec/__pycache__/dct_*.nb[ic]``); ``maskcodec.dct`` imports this module lazily.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from .dct_basis import KERNEL_FASTMATH, dct_matrix, read_only, zigzag_indices
from .float8 import LANES, add8, fma8, load8, prefetch, reverse8, store8, sub8, zero8
from .parallel import MASKS_PER_ITEM, parallel_over_masks


@functools.lru_cache(maxsize=16)
def decode_tables(n: int, k: int) -> tuple[np.ndarray, ...]:
    """Constants of ``decode_dense`` for ``n x n`` masks and ``k`` coefficients (H = (N+1)//2).

    ``position``: flat index of each zigzag coefficient in the (Kr', C) spectrum (Kr' = Kr rounded
    up to even; a row of C: the even column frequencies, then the odd ones from C/2, each
    zero-padded to a multiple of 8); ``rows``: the row basis on the top half, (Kr', H') float32
    (H' = H rounded up to even; odd frequencies zero at the middle row of odd N); ``pairs``: for
    each column block j (even block j with odd block j), how many row-frequency pairs reach it;
    ``basis``: the even, then the odd column frequencies on the left half, (2, C/2, L) float32,
    L = H rounded up to a multiple of 8 (zero-padded; odd ones zero at the middle column);
    ``terms``: the rows of ``basis[0]`` that are not zero padding, (Kc + 1) // 2.
    """
    zz = zigzag_indices(n, k)
    zr, zc = zz[:, 0], zz[:, 1]
    kr, kc = int(zr.max()) + 1, int(zc.max()) + 1
    half = (n + 1) // 2
    basis = dct_matrix(n)[:, :half].astype(np.float32)
    if n % 2:
        basis[1::2, half - 1] = 0.0  # exactly: cos(pi * h / 2) for odd h
    width = LANES * -(-((kc + 1) // 2) // LANES)
    col = np.where(zc % 2 == 0, zc // 2, width + zc // 2)
    rows = np.zeros((kr + kr % 2, half + half % 2), np.float32)
    rows[:kr, :half] = basis[:kr]
    reach = np.zeros(width // LANES, np.int64)  # highest row frequency + 1 in each block pair
    np.maximum.at(reach, col % width // LANES, zr + 1)
    columns = LANES * -(-half // LANES)
    table = np.zeros((2, width, columns), np.float32)
    table[0, : (kc + 1) // 2, :half] = basis[0:kc:2]
    table[1, : kc // 2, :half] = basis[1:kc:2]
    return read_only(zr * 2 * width + col, rows, (reach + 1) // 2, table) + ((kc + 1) // 2,)


def decode_dense(vectors: np.ndarray, mask_size: int) -> np.ndarray:
    """Soft masks ``(B, N, N)`` float32 from zigzag vectors ``(B, n_k)`` float32 (zero-filled spectrum)."""
    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise ValueError(f"decode_dense takes (B, n_k) float32 vectors, got {vectors.shape} {vectors.dtype}")
    b, n = vectors.shape[0], mask_size
    out = np.empty((b, n, n), np.float32)
    if b == 0:
        return out
    args = (np.ascontiguousarray(vectors), n, *decode_tables(n, vectors.shape[1]), out.reshape(-1))
    if parallel_over_masks(b):
        _decode_parallel(b, MASKS_PER_ITEM, *args)
    else:
        _decode_range(0, b, *args)
    return out


# ------------------------------------------------------------------------------------------ kernels
@njit(fastmath=KERNEL_FASTMATH, cache=True, nogil=True)
def _row_coefficients(spectrum, rows, pairs, coef):  # pragma: no cover - numba
    """The column-frequency coefficients of every output row pair: coef[i, 0, c] = e + o (row i),
    coef[i, 1, c] = e - o (row N-1-i), e (o) the sum of rows[h, i] spectrum[h, c] over the even
    (odd) h; rows of C (even block j and odd block j together), (H', 2, C) flat. Rows i, i + 1 x
    2 blocks x even/odd: 8 accumulators, ``pairs[j]`` row-frequency pairs."""
    c = spectrum.shape[0] // rows.shape[0]
    width = c // 2
    stride = rows.shape[1]
    flat = rows.ravel()
    for i in range(0, stride, 2):
        for j in range(pairs.shape[0]):
            q0, q1 = j * LANES, width + j * LANES
            e00 = e01 = e10 = e11 = o00 = o01 = o10 = o11 = zero8()
            for p in range(pairs[j]):
                he, ho = 2 * p * c, (2 * p + 1) * c
                se0, se1 = load8(spectrum, he + q0), load8(spectrum, he + q1)
                so0, so1 = load8(spectrum, ho + q0), load8(spectrum, ho + q1)
                we = 2 * p * stride + i
                wu = np.uint64(we)
                a0, a1 = flat[wu], flat[wu + np.uint64(1)]
                b0, b1 = flat[wu + np.uint64(stride)], flat[wu + np.uint64(stride + 1)]
                e00, e01, e10, e11 = fma8(e00, a0, se0), fma8(e01, a0, se1), fma8(e10, a1, se0), fma8(e11, a1, se1)
                o00, o01, o10, o11 = fma8(o00, b0, so0), fma8(o01, b0, so1), fma8(o10, b1, so0), fma8(o11, b1, so1)
            r0, r1 = 2 * i * c, 2 * (i + 1) * c
            store8(coef, r0 + q0, add8(e00, o00)), store8(coef, r0 + q1, add8(e01, o01))
            store8(coef, r1 + q0, add8(e10, o10)), store8(coef, r1 + q1, add8(e11, o11))
            store8(coef, r0 + c + q0, sub8(e00, o00)), store8(coef, r0 + c + q1, sub8(e01, o01))
            store8(coef, r1 + c + q0, sub8(e10, o10)), store8(coef, r1 + c + q1, sub8(e11, o11))


@njit(fastmath=KERNEL_FASTMATH, cache=True, nogil=True)
def _synthesise_rows(coef, basis, terms, n, m, out, scratch):  # pragma: no cover - numba
    """Rows i and N-1-i of mask m in ``out`` (flat), from their coefficients (``_row_coefficients``):
    left halves e + o, right halves the mirror of e - o, e (o) the sum of a coefficient times a row
    of ``basis[0]`` (``basis[1]``) over the ``terms`` nonzero rows. Per row pair and 2 column
    blocks: 8 accumulators; blocks reaching past the left half are written through ``scratch``."""
    _, width, cols = basis.shape
    c = 2 * width
    odd = width * cols
    half, nl = (n + 1) // 2, n // 2
    for i in range(half):
        top, bot = (m * n + i) * n, (m * n + n - 1 - i) * n
        if i + 1 < half:  # the next row pair's lines, ahead of its writes
            for q in range(0, n, 16):
                prefetch(out, top + n + q), prefetch(out, bot - n + q)
        ft = np.uint64(2 * i * c)
        fb, fto, fbo = ft + np.uint64(c), ft + np.uint64(width), ft + np.uint64(c + width)
        for l0 in range(0, cols, 2 * LANES):
            l1 = min(l0 + LANES, cols - LANES)
            et0 = et1 = eb0 = eb1 = ot0 = ot1 = ob0 = ob1 = zero8()
            for j in range(terms):
                r = j * cols
                e0, e1 = load8(basis, r + l0), load8(basis, r + l1)
                o0, o1 = load8(basis, odd + r + l0), load8(basis, odd + r + l1)
                ju = np.uint64(j)
                a, b, x, y = coef[ft + ju], coef[fb + ju], coef[fto + ju], coef[fbo + ju]
                et0, et1, eb0, eb1 = fma8(et0, a, e0), fma8(et1, a, e1), fma8(eb0, b, e0), fma8(eb1, b, e1)
                ot0, ot1, ob0, ob1 = fma8(ot0, x, o0), fma8(ot1, x, o1), fma8(ob0, y, o0), fma8(ob1, y, o1)
            if l1 + LANES <= nl:  # both blocks inside the left half
                store8(out, top + l0, add8(et0, ot0)), store8(out, top + n - LANES - l0, reverse8(sub8(et0, ot0)))
                store8(out, bot + l0, add8(eb0, ob0)), store8(out, bot + n - LANES - l0, reverse8(sub8(eb0, ob0)))
                store8(out, top + l1, add8(et1, ot1)), store8(out, top + n - LANES - l1, reverse8(sub8(et1, ot1)))
                store8(out, bot + l1, add8(eb1, ob1)), store8(out, bot + n - LANES - l1, reverse8(sub8(eb1, ob1)))
                continue
            store8(scratch, 0, add8(et0, ot0)), store8(scratch, 8, sub8(et0, ot0))
            store8(scratch, 16, add8(eb0, ob0)), store8(scratch, 24, sub8(eb0, ob0))
            store8(scratch, 32, add8(et1, ot1)), store8(scratch, 40, sub8(et1, ot1))
            store8(scratch, 48, add8(eb1, ob1)), store8(scratch, 56, sub8(eb1, ob1))
            _write_through(scratch, l0, l1, top, bot, n, out)


@njit(fastmath=KERNEL_FASTMATH, cache=True, nogil=True)
def _write_through(scratch, l0, l1, top, bot, n, out):  # pragma: no cover - numba
    """The left-half blocks l0, l1 of output rows ``top``, ``bot`` (flat offsets) and their mirrors
    from ``scratch`` (e + o, e - o of top, then of bot, per block), only up to the middle: a call
    of its own keeps the registers of ``_synthesise_rows``'s hot path free."""
    half = (n + 1) // 2
    for block in range(2):
        first = l0 if block == 0 else l1
        s = 32 * block
        for r in range(max(0, min(LANES, half - first))):  # middle column of odd N: e + o = e - o = e
            out[top + first + r] = scratch[s + r]
            out[top + n - 1 - first - r] = scratch[s + 8 + r]
            out[bot + first + r] = scratch[s + 16 + r]
            out[bot + n - 1 - first - r] = scratch[s + 24 + r]


@njit(fastmath=KERNEL_FASTMATH, cache=True, nogil=True)
def _decode_range(start, stop, vectors, n, position, rows, pairs, basis, terms, out):  # pragma: no cover - numba
    """Decode vectors ``start:stop`` serially into ``out`` (flat)."""
    c = 2 * basis.shape[1]
    spectrum = np.zeros(rows.shape[0] * c, np.float32)  # only the zigzag positions are ever written
    coef = np.zeros(rows.shape[1] * 2 * c, np.float32)
    scratch = np.zeros(8 * LANES, np.float32)
    for m in range(start, stop):
        for k in range(position.shape[0]):
            spectrum[position[k]] = vectors[m, k]
        _row_coefficients(spectrum, rows, pairs, coef)
        _synthesise_rows(coef, basis, terms, n, m, out, scratch)


@njit(parallel=True, cache=True)
def _decode_parallel(b, chunk, vectors, n, position, rows, pairs, basis, terms, out):  # pragma: no cover - numba
    n_chunks = (b + chunk - 1) // chunk
    for c in prange(n_chunks):
        _decode_range(c * chunk, min(b, (c + 1) * chunk), vectors, n, position, rows, pairs, basis, terms, out)
