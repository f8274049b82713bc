"""Binary fast path of the DCT encoder: cost proportional to the mask boundary, not its area.

For a binary mask the row transform g_i[w] = sum_j m[i, j] A[w, j] is a sum over the runs
[s, e) of ones in row i of S[e, w] - S[s, w], where S[t, w] = sum_{j < t} A[w, j] is the
prefix sum of the basis rows. The column transform is reorganised the same way: with
Delta_i = g_i - g_{i-1} (zero when row i equals row i-1) and the suffix sums
R[i, h] = sum_{i' >= i} A[h, i'],

    f[h, w] = sum_i A[h, i] g_i[w] = sum_{i : row i != row i-1} R[i, h] Delta_i[w].

So a mask costs one pass over its bytes (8 pixels at a time, as uint64 words) plus work
proportional to its number of runs and of changed rows, and only the zigzag coefficients
(h + w small) are formed. The result equals the dense transform up to float32 rounding.

numba compiles the kernel on first use (``cache=True`` keeps it on disk for later
processes); importing this module is what pulls numba in, so ``maskcodec.dct`` imports it
lazily.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

from .dct_basis import dct_matrix, zigzag_indices
from .parallel import parallel_allowed

_BLOCK = 8  # coefficients per register block; the column basis is zero-padded to a multiple
_CHUNK = 16  # masks per parallel work item (scratch buffers are per item)
_PARALLEL_MIN = 256  # smaller batches run serially

_U1, _U2, _U3, _U4, _U5, _U6, _U7 = (np.uint64(k) for k in range(1, 8))
_U8 = np.uint64(8)
_U56 = np.uint64(56)
_Z = np.uint64(0)


@functools.lru_cache(maxsize=16)
def run_tables(n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Constants for ``n x n`` masks and ``k`` zigzag coefficients.

    Returns ``S`` (n + 1, Kc padded to a multiple of 8) float32 prefix sums of the column
    basis, ``R`` (n, Kr) float32 suffix sums of the row basis, zigzag rows and columns
    (k,) int64, and ``wmax`` (Kr,) int64, the last column needed in each row of the spectrum.
    """
    zz = zigzag_indices(n, k)
    rows, cols = zz[:, 0].copy(), zz[:, 1].copy()
    kr, kc = int(rows.max()) + 1, int(cols.max()) + 1
    kcp = -(-kc // _BLOCK) * _BLOCK
    basis = dct_matrix(n)
    prefix = np.zeros((n + 1, kcp))
    prefix[1:, :kc] = np.cumsum(basis[:kc].T, axis=0)
    suffix = np.cumsum(basis[:kr, ::-1], axis=1)[:, ::-1].T
    wmax = np.zeros(kr, dtype=np.int64)
    np.maximum.at(wmax, rows, cols)
    out = (
        prefix.astype(np.float32),
        np.ascontiguousarray(suffix, dtype=np.float32),
        rows,
        cols,
        wmax,
    )
    for a in out:
        a.setflags(write=False)
    return out


_SCAN_BLOCK = 1 << 14  # elements per block of the binary scan (checked for non-0/1 values per block)


@njit(cache=True, nogil=True)
def _binary_block(flat, out):  # pragma: no cover - numba
    """``out = flat != 0``; returns how many values are neither 0 nor 1 (a vectorised loop)."""
    other = 0
    for i in range(flat.shape[0]):
        v = flat[i]
        out[i] = v != 0.0
        other += (v != 0.0) & (v != 1.0)
    return other


@njit(cache=True, nogil=True)
def _out_of_range(flat):  # pragma: no cover - numba
    """How many values lie outside [0, 1] or are NaN."""
    bad = 0
    for i in range(flat.shape[0]):
        v = flat[i]
        bad += not ((v >= 0.0) & (v <= 1.0))
    return bad


@njit(cache=True, nogil=True)
def _scan_float(flat, out):  # pragma: no cover - numba
    """Whether every value is 0 or 1, block by block, stopping at the first block that holds
    another value; writes ``out = flat != 0`` up to there (meaningless unless all are 0/1)."""
    size = flat.shape[0]
    start = 0
    while start < size:
        stop = min(start + _SCAN_BLOCK, size)
        if _binary_block(flat[start:stop], out[start:stop]):
            return False
        start = stop
    return True


def scan_float_chunk(masks: np.ndarray, scratch: np.ndarray) -> bool:
    """Whether numpy float masks hold only 0 and 1 (NaN counts as another value).

    When they do, ``scratch[:masks.size]`` holds them as 0/1 bytes (view it as bool for
    ``encode_binary``); the scan stops early at a block of 16,384 values that holds another
    value. ``scratch`` is a uint8 buffer of at least ``masks.size`` bytes.
    """
    flat = np.ascontiguousarray(masks).reshape(-1)
    return bool(_scan_float(flat, scratch[:flat.shape[0]]))


def scan_float_masks(masks: np.ndarray) -> tuple[np.ndarray | None, bool]:
    """``(masks as bool, or None if not all 0/1, whether every value lies in [0, 1] with no NaN)``."""
    scratch = np.empty(masks.size, dtype=np.uint8)
    if scan_float_chunk(masks, scratch):
        return scratch.view(np.bool_).reshape(masks.shape), True
    return None, bool(_out_of_range(np.ascontiguousarray(masks).reshape(-1)) == 0)


def encode_binary(masks: np.ndarray, n_components: int) -> np.ndarray:
    """Zigzag DCT coefficients of binary masks, computed from their runs.

    Batches of at least 256 masks are split over numba's threads (``numba.set_num_threads``);
    smaller ones run on the calling thread.

    ``masks``: numpy ``(B, N, N)`` bool, or uint8 holding only 0 and 1 (other byte values give
    wrong results; ``DCTCodec.encode`` validates this). Returns ``(B, n_components)`` float32,
    equal to ``DCTCodec`` 's dense transform up to float32 rounding.
    """
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"masks must have shape (B, N, N), got {masks.shape}")
    if masks.dtype not in (np.bool_, np.uint8):
        raise ValueError(f"the binary fast path takes bool or uint8 masks, got {masks.dtype}")
    b, n, _ = masks.shape
    prefix, suffix, rows, cols, wmax = run_tables(n, n_components)
    out = np.empty((b, n_components), dtype=np.float32)
    if b == 0:
        return out
    data = np.ascontiguousarray(masks).view(np.uint8)
    width = -(-n // 8) * 8
    if width != n:  # whole uint64 words per row: pad with background columns
        data = np.pad(data, ((0, 0), (0, 0), (0, width - n)))
    words = data.reshape(-1).view(np.uint64)
    args = (n, width // 8, prefix, suffix, rows, cols, wmax, out)
    if b < _PARALLEL_MIN or not parallel_allowed():
        # Small batches (one image's targets, e.g. in DataLoader workers) stay single-threaded:
        # no thread start-up; forked children never touch the threading layer (maskcodec.parallel).
        _encode_range(words, 0, b, *args)
    else:
        _encode_parallel(words, b, *args, _CHUNK)
    return out


@njit(fastmath=True, cache=True, nogil=True)
def _scan_runs(words, base, n, nw, starts, offsets, changed, t_words):  # pragma: no cover - numba
    """Run boundaries of every row that differs from the row above.

    Row r of the output (r < returned count) is mask row ``changed[r]``; its boundaries are
    ``starts[offsets[r]:offsets[r + 1]]`` (start, end, start, end, ...; an end may be n).
    """
    nchg = 0
    pos = 0
    for i in range(n):
        row = np.uint64(base + i * nw)
        diff = _Z
        for k in range(nw):
            ku = np.uint64(k)
            w = words[row + ku]
            prev = words[row + ku - _U1] if k > 0 else _Z
            # byte j of t is 1 where pixel j differs from pixel j - 1 (bytes are 0 or 1)
            t_words[ku] = w ^ ((w << _U8) | (prev >> _U56))
            if i > 0:
                diff |= w ^ words[row + ku - np.uint64(nw)]
        if i > 0 and diff == _Z:
            continue
        offsets[nchg] = pos
        changed[nchg] = i
        for g0 in range(0, nw, 64):
            nonzero = _Z
            for k in range(min(64, nw - g0)):
                nonzero |= np.uint64(t_words[np.uint64(g0 + k)] != _Z) << np.uint64(k)
            while nonzero:
                k = g0 + np.int64(trailing_zeros(nonzero))
                nonzero &= nonzero - _U1
                t = t_words[np.uint64(k)]
                while t:
                    starts[pos] = k * 8 + (np.int64(trailing_zeros(t)) >> 3)
                    pos += 1
                    t &= t - _U1
        if words[row + np.uint64(nw - 1)] >> _U56:  # a run reaches the last column
            starts[pos] = n
            pos += 1
        nchg += 1
    offsets[nchg] = pos
    return nchg


@njit(fastmath=True, cache=True, nogil=True)
def _row_deltas(prefix, starts, offsets, nchg, delta):  # pragma: no cover - numba
    """delta[w, r] = g_{changed[r]}[w] - g_{previous changed row}[w], 8 columns at a time."""
    kcp = prefix.shape[1]
    for qb in range(kcp // 8):
        q0 = np.uint64(qb * 8)
        p0 = p1 = p2 = p3 = p4 = p5 = p6 = p7 = np.float32(0.0)
        for r in range(nchg):
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
            for t in range(offsets[r] // 2, offsets[r + 1] // 2):
                s, e = np.uint64(starts[2 * t]), np.uint64(starts[2 * t + 1])
                a0 += prefix[e, q0] - prefix[s, q0]
                a1 += prefix[e, q0 + _U1] - prefix[s, q0 + _U1]
                a2 += prefix[e, q0 + _U2] - prefix[s, q0 + _U2]
                a3 += prefix[e, q0 + _U3] - prefix[s, q0 + _U3]
                a4 += prefix[e, q0 + _U4] - prefix[s, q0 + _U4]
                a5 += prefix[e, q0 + _U5] - prefix[s, q0 + _U5]
                a6 += prefix[e, q0 + _U6] - prefix[s, q0 + _U6]
                a7 += prefix[e, q0 + _U7] - prefix[s, q0 + _U7]
            ru = np.uint64(r)
            delta[q0, ru] = a0 - p0
            delta[q0 + _U1, ru] = a1 - p1
            delta[q0 + _U2, ru] = a2 - p2
            delta[q0 + _U3, ru] = a3 - p3
            delta[q0 + _U4, ru] = a4 - p4
            delta[q0 + _U5, ru] = a5 - p5
            delta[q0 + _U6, ru] = a6 - p6
            delta[q0 + _U7, ru] = a7 - p7
            p0, p1, p2, p3, p4, p5, p6, p7 = a0, a1, a2, a3, a4, a5, a6, a7


@njit(fastmath=True, cache=True, nogil=True)
def _column_pass(delta, suffix, changed, nchg, wmax, weights, spectrum):  # pragma: no cover - numba
    """spectrum[h, w] = sum_r suffix[changed[r], h] * delta[w, r] for w <= wmax[h] (8-column blocks)."""
    kr = suffix.shape[1]
    for r in range(nchg):
        i = changed[r]
        for h in range(kr):
            weights[h, r] = suffix[i, h]
    for h in range(kr):
        hu = np.uint64(h)
        for qb in range((wmax[h] + 8) // 8):
            q0 = np.uint64(qb * 8)
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
            for r in range(nchg):
                ru = np.uint64(r)
                a = weights[hu, ru]
                a0 += a * delta[q0, ru]
                a1 += a * delta[q0 + _U1, ru]
                a2 += a * delta[q0 + _U2, ru]
                a3 += a * delta[q0 + _U3, ru]
                a4 += a * delta[q0 + _U4, ru]
                a5 += a * delta[q0 + _U5, ru]
                a6 += a * delta[q0 + _U6, ru]
                a7 += a * delta[q0 + _U7, ru]
            spectrum[hu, q0] = a0
            spectrum[hu, q0 + _U1] = a1
            spectrum[hu, q0 + _U2] = a2
            spectrum[hu, q0 + _U3] = a3
            spectrum[hu, q0 + _U4] = a4
            spectrum[hu, q0 + _U5] = a5
            spectrum[hu, q0 + _U6] = a6
            spectrum[hu, q0 + _U7] = a7


@njit(fastmath=True, cache=True, nogil=True)
def _encode_range(words, start, stop, n, nw, prefix, suffix, rows, cols, wmax, out):  # pragma: no cover - numba
    """Encode masks ``start:stop`` serially, with scratch buffers shared by those masks."""
    kcp = prefix.shape[1]
    kr = suffix.shape[1]
    spectrum = np.zeros((kr, kcp), np.float32)
    starts = np.empty(n * (8 * nw + 2), np.int32)
    offsets = np.empty(n + 1, np.int64)
    changed = np.empty(n, np.int64)
    t_words = np.empty(nw, np.uint64)
    delta = np.empty((kcp, n), np.float32)
    weights = np.empty((kr, n), np.float32)
    for m in range(start, stop):
        nchg = _scan_runs(words, m * n * nw, n, nw, starts, offsets, changed, t_words)
        _row_deltas(prefix, starts, offsets, nchg, delta)
        _column_pass(delta, suffix, changed, nchg, wmax, weights, spectrum)
        for k in range(rows.shape[0]):
            out[m, k] = spectrum[rows[k], cols[k]]


@njit(parallel=True, fastmath=True, cache=True)
def _encode_parallel(words, b, n, nw, prefix, suffix, rows, cols, wmax, out, chunk):  # pragma: no cover - numba
    n_chunks = (b + chunk - 1) // chunk
    for c in prange(n_chunks):
        _encode_range(words, c * chunk, min(b, (c + 1) * chunk), n, nw, prefix, suffix, rows, cols, wmax, out)
