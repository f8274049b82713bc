"""Dense DCT encode and decode of numpy arrays: numba kernels that use the basis's even/odd symmetry.

The DCT-II basis satisfies A[h, N-1-l] = (-1)^h A[h, l]. So for a row x of a mask, with
s[l] = x[l] + x[N-1-l] and d[l] = x[l] - x[N-1-l] (l < N/2), the row transform is

    g[w] = s . A[w, :N/2]  (w even),        g[w] = d . A[w, :N/2]  (w odd),

half the multiply-adds of the plain product x . A[w]. Decoding uses the same identity the
other way: a row of the output is e + o on its left half and the mirror of e - o on its right
half, with e (o) the sum over the even (odd) column frequencies of the truncated spectrum. In
decode the identity is also used across rows (rows i and N-1-i share their products).

Each mask is transformed in cache with no (B, ...) temporaries and no zigzag scatter or gather
array: encode writes the n_k coefficients straight into the output, decode reads them straight
from the input vector and writes the (B, N, N) output once. The encode kernel also validates
the values (in [0, 1], no NaN or infinity) in the same pass.

Results equal ``DCTCodec``'s GEMM path (``DCTCodec._encode_dense`` / torch decode) up to float32
rounding. numba compiles on first use (``cache=True`` keeps it on disk); ``maskcodec.dct``
imports this module lazily.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from .dct_basis import dct_matrix, zigzag_indices
from .parallel import parallel_allowed

#: fastmath without "nnan"/"ninf": the kernels assume nothing about the values they read (encode
#: validates them through their bit patterns and reports NaN and infinity).
#: The per-row helpers below are inlined into the per-mask loops by numba (inline="always").
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
_ENC_GROUP = 4  # basis rows per pass of the encode dot products (the basis is zero-padded to a multiple)
_DEC_GROUP = 6  # basis rows per pass of the decode accumulation
_CHUNK = 16  # masks per parallel work item
_PARALLEL_MIN = 256  # smaller batches run on the calling thread


def _padded(rows: np.ndarray, group: int) -> np.ndarray:
    """float32 copy of ``rows`` (R, L) with zero rows appended up to a multiple of ``group`` (at least one group)."""
    count = max(group, -(-rows.shape[0] // group) * group)
    out = np.zeros((count, rows.shape[1]), np.float32)
    out[: rows.shape[0]] = rows
    return out


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.setflags(write=False)
    return arrays


@functools.lru_cache(maxsize=16)
def encode_tables(n: int, k: int) -> tuple[np.ndarray, ...]:
    """Constants of ``encode_dense`` for ``n x n`` masks and ``k`` coefficients.

    ``be`` / ``bo``: even / odd column frequencies of the basis on the left half, (>= Kc/2, N//2)
    float32, zero-padded to a multiple of 4 rows; ``mid``: the even frequencies at the middle
    column of odd N (zeros for even N); ``rows``: the Kr row frequencies on the top half,
    (Kr, (N+1)//2) float32 (odd ones zero at the middle row of odd N);
    ``zk``, ``zh``, ``zj``: for the even-column coefficients, then the odd-column ones, the
    output position, the row frequency and the index into ``be`` / ``bo``; ``split``: where
    the odd-column entries start.
    """
    zz = zigzag_indices(n, k)
    zr, zc = zz[:, 0], zz[:, 1]
    kr, kc = int(zr.max()) + 1, int(zc.max()) + 1
    basis = dct_matrix(n)
    nl = n // 2
    be = _padded(basis[0:kc:2, :nl], _ENC_GROUP)
    bo = _padded(basis[1:kc:2, :nl], _ENC_GROUP)
    mid = np.zeros(be.shape[0], np.float32)
    if n % 2:
        mid[: (kc + 1) // 2] = basis[0:kc:2, nl]
    rows = basis[:kr, : (n + 1) // 2].astype(np.float32)
    if n % 2:
        rows[1::2, n // 2] = 0.0  # exactly: cos(pi * h / 2) for odd h
    order = np.concatenate([np.flatnonzero(zc % 2 == 0), np.flatnonzero(zc % 2 == 1)])
    split = int(np.count_nonzero(zc % 2 == 0))
    return _frozen(be, bo, mid, rows, order, zr[order].copy(), zc[order] // 2) + (split,)


@functools.lru_cache(maxsize=16)
def decode_tables(n: int, k: int) -> tuple[np.ndarray, ...]:
    """Constants of ``decode_dense``: for the even-row coefficients, then the odd-row ones, their
    positions in the vector (``order``), their column frequencies (``zc``) and their row basis on
    the top half ``(k, (N+1)//2)`` float32 (``rows``; odd rows are zero at the middle row of odd N);
    ``split``: where the odd-row entries start; ``be`` / ``bo``: the even / odd column
    frequencies on the left half, ``((N+1)//2)`` columns, zero-padded to a multiple of 6 rows
    (odd ones zero at the middle column); ``kc``."""
    zz = zigzag_indices(n, k)
    zr, zc = zz[:, 0], zz[:, 1]
    kc = int(zc.max()) + 1
    half = (n + 1) // 2
    basis = dct_matrix(n)[:, :half].astype(np.float32)
    if n % 2:
        basis[1::2, half - 1] = 0.0  # exactly: cos(pi * h / 2) for odd h
    order = np.concatenate([np.flatnonzero(zr % 2 == 0), np.flatnonzero(zr % 2 == 1)])
    split = int(np.count_nonzero(zr % 2 == 0))
    be = _padded(basis[0:kc:2], _DEC_GROUP)
    bo = _padded(basis[1:kc:2], _DEC_GROUP)
    return _frozen(order, zc[order].copy(), basis[zr[order]], be, bo) + (split, kc)


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
    which = np.arange(masks.shape[0]) if which is None else np.asarray(which, dtype=np.int64)
    b = which.shape[0]
    if which.ndim != 1 or (b and not 0 <= which.min() <= which.max() < masks.shape[0]):
        raise ValueError(f"which must be indices into the {masks.shape[0]} masks, got {which!r:.80}")
    out = np.empty((b, n_components), np.float32)
    if b == 0:
        return out, True
    masks = np.ascontiguousarray(masks)
    bits = masks.view(np.uint32 if masks.dtype == np.float32 else np.uint64)
    args = (which, masks, bits, *encode_tables(n, n_components), out)
    if b < _PARALLEL_MIN or not parallel_allowed():
        largest = _encode_range(0, b, *args)
    else:
        largest = _encode_parallel(b, _CHUNK, *args)
    # Every value in [0, 1] has a bit pattern at most that of 1.0 (no sign bit; NaN and infinity
    # lie above). A larger one is a bad value or a negative zero: only then a full check.
    if largest <= np.array(1.0, masks.dtype).view(bits.dtype):
        return out, True
    subset = masks if b == masks.shape[0] else masks[which]
    return out, bool(((subset >= 0.0) & (subset <= 1.0)).all())


def decode_dense(vectors: np.ndarray, mask_size: int) -> np.ndarray:
    """Soft masks ``(B, N, N)`` float32 from zigzag vectors ``(B, n_k)`` float32 (zero-filled spectrum)."""
    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise ValueError(f"decode_dense takes (B, n_k) float32 vectors, got {vectors.shape} {vectors.dtype}")
    b, n = vectors.shape[0], mask_size
    out = np.empty((b, n, n), np.float32)
    if b == 0:
        return out
    args = (np.ascontiguousarray(vectors), n, *decode_tables(n, vectors.shape[1]), out)
    if b < _PARALLEL_MIN or not parallel_allowed():
        _decode_range(0, b, *args)
    else:
        _decode_parallel(b, _CHUNK, *args)
    return out


# ---------------------------------------------------------------------------------------- encode
@njit(fastmath=_FAST, cache=True, nogil=True, inline="always")
def _row_butterfly(masks, bits, m, i, s, d, largest):  # pragma: no cover - numba
    """s[l] = x[l] + x[N-1-l], d[l] = x[l] - x[N-1-l] for row i of mask m. Returns the largest of
    ``largest`` and the row's bit patterns (``bits``: the masks viewed as unsigned integers; a
    value lies in [0, 1] when its pattern is at most that of 1.0: one integer max per value)."""
    n = masks.shape[1]
    row = masks[m, i]  # row views: measured faster than 3-D indexing here
    row_bits = bits[m, i]
    for ls in range(n // 2):
        lu, ru = np.uint64(ls), np.uint64(n - 1 - ls)
        largest = max(largest, max(row_bits[lu], row_bits[ru]))
        a, b = np.float32(row[lu]), np.float32(row[ru])
        s[lu] = a + b
        d[lu] = a - b
    return largest


@njit(fastmath=_FAST, cache=True, nogil=True, inline="always")
def _pair_products(i, basis, x0, x1, g):  # pragma: no cover - numba
    """g[j, i] = x0 . basis[j] and g[j, i + 1] = x1 . basis[j] for every basis row j: two mask
    rows share each load of the basis (4 basis rows per pass)."""
    i0 = np.uint64(i)
    i1 = i0 + np.uint64(1)
    for j0 in range(0, basis.shape[0], 4):
        r0 = np.uint64(j0)
        r1, r2, r3 = r0 + np.uint64(1), r0 + np.uint64(2), r0 + np.uint64(3)
        a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = np.float32(0.0)
        for ls in range(x0.shape[0]):
            lu = np.uint64(ls)
            p, q = x0[lu], x1[lu]
            c0, c1, c2, c3 = basis[r0, lu], basis[r1, lu], basis[r2, lu], basis[r3, lu]
            a0 += p * c0
            a1 += p * c1
            a2 += p * c2
            a3 += p * c3
            b0 += q * c0
            b1 += q * c1
            b2 += q * c2
            b3 += q * c3
        g[r0, i0], g[r1, i0], g[r2, i0], g[r3, i0] = a0, a1, a2, a3
        g[r0, i1], g[r1, i1], g[r2, i1], g[r3, i1] = b0, b1, b2, b3


@njit(fastmath=_FAST, cache=True, nogil=True, inline="always")
def _fold_columns(g, n, folded):  # pragma: no cover - numba
    """folded[j] = g[j, i] + g[j, N-1-i] and folded[J + j] = g[j, i] - g[j, N-1-i] for i < N/2
    (J = rows of g; for odd N the middle entry is g[j, N//2] and 0): the butterflies of the
    column transform, which the row basis's even/odd symmetry turns into half-length products."""
    nl = n // 2
    rows_g = folded.shape[0] // 2
    for j in range(rows_g):
        ju, du = np.uint64(j), np.uint64(rows_g + j)
        for ls in range(nl):
            lu = np.uint64(ls)
            a, b = g[ju, lu], g[ju, np.uint64(n - 1 - ls)]
            folded[ju, lu] = a + b
            folded[du, lu] = a - b
        if n % 2:
            folded[ju, np.uint64(nl)] = g[ju, np.uint64(nl)]
            folded[du, np.uint64(nl)] = 0.0


@njit(fastmath=_FAST, cache=True, nogil=True, inline="always")
def _column_products(m, rows, folded, zk, zh, zj, first, last, out):  # pragma: no cover - numba
    """out[m, zk[t]] = A[h] . g[j] for t in [first, last), h = zh[t], j = zj[t]: the column
    transform, only at the zigzag coefficients, on half columns (``folded`` from
    ``_fold_columns``; ``rows``: the row basis on the top half)."""
    odd_offset = folded.shape[0] // 2
    for t in range(first, last):
        h = np.uint64(zh[t])
        j = np.uint64(zj[t] + (zh[t] & 1) * odd_offset)
        acc = np.float32(0.0)
        for ls in range(rows.shape[1]):
            acc += rows[h, np.uint64(ls)] * folded[j, np.uint64(ls)]
        out[m, zk[t]] = acc


@njit(fastmath=_FAST, cache=True, nogil=True)
def _encode_range(start, stop, which, masks, bits, be, bo, mid, rows, zk, zh, zj, split, out):  # pragma: no cover - numba
    """Encode masks ``which[start:stop]`` serially into ``out[start:stop]``; returns the largest bit
    pattern of their values."""
    n = masks.shape[1]
    nl = n // 2
    s0, d0 = np.zeros(nl, np.float32), np.zeros(nl, np.float32)  # butterflies of rows i and i + 1
    s1, d1 = np.zeros(nl, np.float32), np.zeros(nl, np.float32)
    ge = np.zeros((be.shape[0], n + 1), np.float32)  # column n: scratch for the last row of odd N
    go = np.zeros((bo.shape[0], n + 1), np.float32)
    fe = np.zeros((2 * be.shape[0], rows.shape[1]), np.float32)
    fo = np.zeros((2 * bo.shape[0], rows.shape[1]), np.float32)
    largest = bits[which[start], 0, 0]
    for t in range(start, stop):
        m = which[t]
        for i in range(0, n, 2):
            largest = _row_butterfly(masks, bits, m, i, s0, d0, largest)
            if i + 1 < n:
                largest = _row_butterfly(masks, bits, m, i + 1, s1, d1, largest)
                _pair_products(i, be, s0, s1, ge)
                _pair_products(i, bo, d0, d1, go)
            else:  # the last row of odd N goes alone (its twin lands in the scratch column)
                _pair_products(i, be, s0, s0, ge)
                _pair_products(i, bo, d0, d0, go)
        if n % 2:  # the middle column of odd N meets only the even column frequencies
            for i in range(n):
                largest = max(largest, bits[m, i, nl])
                a = np.float32(masks[m, i, nl])
                for j in range(be.shape[0]):
                    ge[j, i] += a * mid[j]
        _fold_columns(ge, n, fe)
        _fold_columns(go, n, fo)
        _column_products(t, rows, fe, zk, zh, zj, 0, split, out)
        _column_products(t, rows, fo, zk, zh, zj, split, zk.shape[0], out)
    return largest


@njit(parallel=True, cache=True)
def _encode_parallel(b, chunk, which, masks, bits, be, bo, mid, rows, zk, zh, zj, split, out):  # pragma: no cover - numba
    n_chunks = (b + chunk - 1) // chunk
    largest = np.zeros(n_chunks, bits.dtype)
    for c in prange(n_chunks):
        largest[c] = _encode_range(c * chunk, min(b, (c + 1) * chunk), which, masks, bits, be, bo, mid, rows, zk, zh,
                                   zj, split, out)
    return largest.max()


# ---------------------------------------------------------------------------------------- decode
@njit(fastmath=_FAST, cache=True, nogil=True, inline="always")
def _spectrum_rows(vectors, m, order, zc, rows, split, xe, xo):  # pragma: no cover - numba
    """xe[w, i] = sum of A[h, i] v[k] over the coefficients k at (h even, w); xo for odd h (i < (N+1)/2)."""
    xe[:, :] = 0.0
    xo[:, :] = 0.0
    for t in range(split):
        a, c, tu = vectors[m, order[t]], np.uint64(zc[t]), np.uint64(t)
        for i in range(xe.shape[1]):
            xe[c, np.uint64(i)] += rows[tu, np.uint64(i)] * a
    for t in range(split, order.shape[0]):
        a, c, tu = vectors[m, order[t]], np.uint64(zc[t]), np.uint64(t)
        for i in range(xo.shape[1]):
            xo[c, np.uint64(i)] += rows[tu, np.uint64(i)] * a


@njit(fastmath=_FAST, cache=True, nogil=True, inline="always")
def _row_accumulate(ct, cb, basis, top, bot):  # pragma: no cover - numba
    """top[l] = sum_j ct[j] basis[j, l], bot[l] likewise with cb; 6 basis rows per pass."""
    for j0 in range(0, basis.shape[0], 6):
        a0, a1, a2, a3, a4, a5 = ct[j0], ct[j0 + 1], ct[j0 + 2], ct[j0 + 3], ct[j0 + 4], ct[j0 + 5]
        c0, c1, c2, c3, c4, c5 = cb[j0], cb[j0 + 1], cb[j0 + 2], cb[j0 + 3], cb[j0 + 4], cb[j0 + 5]
        r0 = np.uint64(j0)
        r1, r2, r3, r4, r5 = (r0 + np.uint64(1), r0 + np.uint64(2), r0 + np.uint64(3), r0 + np.uint64(4),
                              r0 + np.uint64(5))
        first = j0 == 0
        for ls in range(top.shape[0]):
            lu = np.uint64(ls)
            b0, b1, b2 = basis[r0, lu], basis[r1, lu], basis[r2, lu]
            b3, b4, b5 = basis[r3, lu], basis[r4, lu], basis[r5, lu]
            t = a0 * b0 + a1 * b1 + a2 * b2 + a3 * b3 + a4 * b4 + a5 * b5
            u = c0 * b0 + c1 * b1 + c2 * b2 + c3 * b3 + c4 * b4 + c5 * b5
            if first:
                top[lu] = t
                bot[lu] = u
            else:
                top[lu] += t
                bot[lu] += u


@njit(fastmath=_FAST, cache=True, nogil=True)
def _decode_range(start, stop, vectors, n, order, zc, rows, be, bo, split, kc, out):  # pragma: no cover - numba
    """Decode vectors ``start:stop`` serially into ``out``; rows i and N-1-i are formed together."""
    half = (n + 1) // 2
    nl = n // 2
    xe = np.zeros((2 * be.shape[0], half), np.float32)
    xo = np.zeros((2 * be.shape[0], half), np.float32)
    cet = np.zeros(be.shape[0], np.float32)
    ceb = np.zeros(be.shape[0], np.float32)
    cot = np.zeros(bo.shape[0], np.float32)
    cob = np.zeros(bo.shape[0], np.float32)
    et = np.empty(half, np.float32)
    eb = np.empty(half, np.float32)
    ot = np.empty(half, np.float32)
    ob = np.empty(half, np.float32)
    for m in range(start, stop):
        _spectrum_rows(vectors, m, order, zc, rows, split, xe, xo)
        for i in range(half):
            iu = np.uint64(i)
            for j in range((kc + 1) // 2):  # row i: x = xe + xo; row N-1-i: x = xe - xo
                ju = np.uint64(2 * j)
                cet[j] = xe[ju, iu] + xo[ju, iu]
                ceb[j] = xe[ju, iu] - xo[ju, iu]
            for j in range(kc // 2):
                ju = np.uint64(2 * j + 1)
                cot[j] = xe[ju, iu] + xo[ju, iu]
                cob[j] = xe[ju, iu] - xo[ju, iu]
            _row_accumulate(cet, ceb, be, et, eb)
            _row_accumulate(cot, cob, bo, ot, ob)
            top = out[m, i]  # row views: measured faster than 3-D indexing in these loops
            bot = out[m, n - 1 - i]
            for ls in range(nl):  # left halves: e + o
                lu = np.uint64(ls)
                top[lu] = et[lu] + ot[lu]
                bot[lu] = eb[lu] + ob[lu]
            for js in range(nl):  # right halves: the mirror of e - o
                lu = np.uint64(nl - 1 - js)
                cu = np.uint64(n - nl + js)
                top[cu] = et[lu] - ot[lu]
                bot[cu] = eb[lu] - ob[lu]
            if n % 2:  # the middle column (odd frequencies vanish there)
                lu = np.uint64(nl)
                top[lu] = et[lu]
                bot[lu] = eb[lu]


@njit(parallel=True, cache=True)
def _decode_parallel(b, chunk, vectors, n, order, zc, rows, be, bo, split, kc, out):  # pragma: no cover - numba
    n_chunks = (b + chunk - 1) // chunk
    for c in prange(n_chunks):
        _decode_range(c * chunk, min(b, (c + 1) * chunk), vectors, n, order, zc, rows, be, bo, split, kc, out)
