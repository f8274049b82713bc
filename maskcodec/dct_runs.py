"""Binary fast path of the DCT encoder: cost proportional to the mask boundary, not its area.

For a binary mask the row transform g_i[w] = sum_j m[i, j] A[w, j] is a sum over the runs
[s, e) of ones in row i of S[e, w] - S[s, w], where S[t, w] = sum_{j < t} A[w, j] is the
prefix sum of the basis rows. The column transform is reorganised the same way: with
Delta_i = g_i - g_{i-1} (zero when row i equals row i-1) and the suffix sums
R[i, h] = sum_{i' >= i} A[h, i'],

    f[h, w] = sum_i A[h, i] g_i[w] = sum_{i : row i != row i-1} R[i, h] Delta_i[w].

So a mask costs one pass over its values plus work proportional to its number of runs and of
changed rows, and only the zigzag coefficients (h + w small) are formed. The pass packs each
row into bit words, 64 values per vector compare (``maskcodec.bit_words``), and reads bool,
uint8, float32 and float64 masks alike: the same compares find the values other than 0 and 1,
so float masks are checked and transformed in one pass (a mask holding another value is
flagged and left to the dense kernel). The row deltas and the column pass keep 8 spectrum
columns per register (``maskcodec.float8``); the column pass accumulates 4 x 16 blocks of the
spectrum in 8 registers per sweep over the changed rows. The result equals the dense transform up
to float32 rounding.

numba compiles the kernel on first use (``cache=True`` keeps it on disk for later
processes); importing this module is what pulls numba in, so ``maskcodec.dct`` imports it
lazily.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

from .bit_words import nonzero_bits64
from .dct_basis import KERNEL_FASTMATH, dct_matrix, read_only, zigzag_indices
from .float8 import LANES, add8, fma8, load8, store8, sub8, zero8
from .parallel import MASKS_PER_ITEM, parallel_over_masks

_ROWS = 4  # spectrum rows per pass of the column pass; the row basis is zero-padded to a multiple
_SUM_ROWS = 16  # changed rows per partial sum of the column pass's group 0 (see _column_pass)

_U1 = np.uint64(1)
_U63 = np.uint64(63)
_Z = np.uint64(0)


@functools.lru_cache(maxsize=16)
def run_tables(n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Constants for ``n x n`` masks and ``k`` zigzag coefficients.

    Returns ``S`` (n + 1, Kc padded to a multiple of 8) float32 prefix sums of the column
    basis, ``R`` (n, Kr padded to a multiple of 4) float32 suffix sums of the row basis, zigzag
    rows and columns (k,) int64, and ``blocks`` (Kr padded / 4,) int64: how many 8-column blocks
    of the spectrum rows 4g..4g + 3 need.
    """
    zz = zigzag_indices(n, k)
    rows, cols = zz[:, 0].copy(), zz[:, 1].copy()
    kr, kc = int(rows.max()) + 1, int(cols.max()) + 1
    kcp = -(-kc // LANES) * LANES
    krp = -(-kr // _ROWS) * _ROWS
    basis = dct_matrix(n)
    prefix = np.zeros((n + 1, kcp))
    prefix[1:, :kc] = np.cumsum(basis[:kc].T, axis=0)
    suffix = np.zeros((n, krp))
    suffix[:, :kr] = np.cumsum(basis[:kr, ::-1], axis=1)[:, ::-1].T
    wmax = np.zeros(krp, dtype=np.int64)  # the last column needed in each row of the spectrum
    np.maximum.at(wmax, rows, cols)
    blocks = wmax.reshape(-1, _ROWS).max(axis=1) // LANES + 1
    return read_only(prefix.astype(np.float32), suffix.astype(np.float32), rows, cols, blocks)


def encode_runs(masks: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Zigzag DCT coefficients of the binary masks among numpy ``masks``, computed from their runs.

    ``masks``: ``(B, N, N)`` bool, uint8, float32 or float64. Returns ``(vectors (B, n_components)
    float32, binary (B,) bool)``: ``binary[m]`` is False when mask m holds a value other than 0
    and 1 (NaN included; its row of ``vectors`` is then left unset: the scan of that mask stops at
    the first such row). Batches of at least ``maskcodec.parallel.PARALLEL_MIN_MASKS`` (256) masks
    are split over numba's threads (``numba.set_num_threads``); smaller ones run on the calling thread.
    """
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"masks must have shape (B, N, N), got {masks.shape}")
    if masks.dtype not in (np.bool_, np.uint8, np.float32, np.float64):
        raise ValueError(f"the run-length kernel takes bool, uint8, float32 or float64 masks, got {masks.dtype}")
    b, n, _ = masks.shape
    prefix, suffix, rows, cols, blocks = run_tables(n, n_components)
    out = np.empty((b, n_components), dtype=np.float32)
    binary = np.zeros(b, dtype=np.bool_)
    if b == 0:
        return out, binary
    flat = np.ascontiguousarray(masks).reshape(-1)
    if flat.dtype == np.bool_:
        flat = flat.view(np.uint8)
    args = (n, prefix, suffix.reshape(-1), rows, cols, blocks, out, binary)
    if parallel_over_masks(b):
        _encode_parallel(flat, b, *args, MASKS_PER_ITEM)
    else:  # forked children never touch the threading layer (maskcodec.parallel)
        _encode_range(flat, 0, b, *args)
    return out, binary


def encode_binary(masks: np.ndarray, n_components: int) -> np.ndarray:
    """Zigzag DCT coefficients ``(B, n_components)`` float32 of binary masks, computed from their runs.

    ``masks``: numpy ``(B, N, N)`` bool, or uint8 holding only 0 and 1 (other byte values raise
    ``ValueError``). Equal to ``DCTCodec`` 's dense transform up to float32 rounding.
    """
    if masks.dtype not in (np.bool_, np.uint8):
        raise ValueError(f"the binary fast path takes bool or uint8 masks, got {masks.dtype}")
    out, binary = encode_runs(masks, n_components)
    if not binary.all():
        raise ValueError(f"uint8 masks must hold only 0 and 1; mask {int(np.argmin(binary))} holds another "
                         "value (convert with masks > 0 or masks.astype(bool))")
    return out


@njit(fastmath=KERNEL_FASTMATH, cache=True, nogil=True, inline="always")
def _row_bits(flat, base, n, bits, slot):  # pragma: no cover - numba
    """``bits[slot]`` = the row ``flat[base:base + n]`` as bit words (bit j of word k: value
    64k + j is not 0). Returns a nonzero word if a value is neither 0 nor 1 (or NaN)."""
    full = n // 64
    other = _Z
    for k in range(full):
        word, odd = nonzero_bits64(flat, base + 64 * k)
        bits[slot, np.uint64(k)] = word
        other |= odd
    tail = n - 64 * full
    if tail:  # the last partial word: pixel by pixel (a vector load would run past the row)
        word = _Z
        for j in range(tail):
            v = flat[np.uint64(base + 64 * full + j)]
            word |= np.uint64(v != 0) << np.uint64(j)
            other |= np.uint64((v != 0) & (v != 1))
        bits[slot, np.uint64(full)] = word
    return other


@njit(fastmath=KERNEL_FASTMATH, cache=True, nogil=True, inline="always")
def _scan_rows(flat, m, n, bits, starts, offsets, changed):  # pragma: no cover - numba
    """Run boundaries of every row of mask ``m`` that differs from the row above.

    Row r of the output (r < returned count) is mask row ``changed[r]``; its boundaries are
    ``starts[offsets[r]:offsets[r + 1]]`` (start, end, start, end, ...; an end may be n).
    Returns -1 at the first row holding a value other than 0 and 1. ``bits`` (2, words per
    row) holds the current and the previous row.
    """
    nchg = 0
    pos = 0
    cur = _Z
    for i in range(n):
        if _row_bits(flat, (m * n + i) * n, n, bits, cur):
            return -1
        if i > 0:
            same = True
            for k in range(bits.shape[1]):
                same &= bits[cur, np.uint64(k)] == bits[_U1 - cur, np.uint64(k)]
            if same:
                continue
        offsets[nchg] = pos
        changed[nchg] = i
        carry = _Z  # the previous pixel (pixel -1 is background)
        for k in range(bits.shape[1]):
            word = bits[cur, np.uint64(k)]
            t = word ^ ((word << _U1) | carry)  # bit j: pixel 64k + j differs from the one before
            carry = word >> _U63
            while t:
                starts[pos] = k * 64 + np.int64(trailing_zeros(t))
                pos += 1
                t &= t - _U1
        if carry:  # a run reaches the last column of a row of whole words (else the pad bits end it)
            starts[pos] = n
            pos += 1
        nchg += 1
        cur = _U1 - cur
    offsets[nchg] = pos
    return nchg


@njit(fastmath=True, cache=True, nogil=True)
def _row_deltas(prefix, starts, offsets, nchg, delta):  # pragma: no cover - numba
    """delta[r, w] = g_{changed[r]}[w] - g_{previous changed row}[w], row-major, 8 columns per register."""
    kcp = prefix.shape[1]
    for q0 in range(0, kcp, LANES):
        previous = zero8()
        for r in range(nchg):
            g = zero8()
            for t in range(offsets[r] // 2, offsets[r + 1] // 2):
                s, e = starts[2 * t], starts[2 * t + 1]
                g = add8(g, sub8(load8(prefix, e * kcp + q0), load8(prefix, s * kcp + q0)))
            store8(delta, r * kcp + q0, sub8(g, previous))
            previous = g


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def _rows4_blocks2(delta, suffix, krp, changed, r0, r1, h0, q0, spectrum):  # pragma: no cover - numba
    """spectrum[h0:h0 + 4, q0:q0 + 16] += sum_{r0 <= r < r1} suffix[changed[r], h0:h0 + 4]^T delta[r, q0:q0 + 16]."""
    kcp = delta.shape[1]
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = zero8()
    for r in range(r0, r1):
        w = changed[r] * krp + h0
        w0, w1, w2, w3 = suffix[w], suffix[w + 1], suffix[w + 2], suffix[w + 3]
        d, e = load8(delta, r * kcp + q0), load8(delta, r * kcp + q0 + LANES)
        a0, a1, a2, a3 = fma8(a0, w0, d), fma8(a1, w1, d), fma8(a2, w2, d), fma8(a3, w3, d)
        b0, b1, b2, b3 = fma8(b0, w0, e), fma8(b1, w1, e), fma8(b2, w2, e), fma8(b3, w3, e)
    out = h0 * kcp + q0
    _add_to(spectrum, out, a0), _add_to(spectrum, out + kcp, a1)
    _add_to(spectrum, out + 2 * kcp, a2), _add_to(spectrum, out + 3 * kcp, a3)
    _add_to(spectrum, out + LANES, b0), _add_to(spectrum, out + kcp + LANES, b1)
    _add_to(spectrum, out + 2 * kcp + LANES, b2), _add_to(spectrum, out + 3 * kcp + LANES, b3)


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def _rows4_block1(delta, suffix, krp, changed, r0, r1, h0, q0, spectrum):  # pragma: no cover - numba
    """spectrum[h0:h0 + 4, q0:q0 + 8] += sum_{r0 <= r < r1} suffix[changed[r], h0:h0 + 4]^T delta[r, q0:q0 + 8]."""
    kcp = delta.shape[1]
    a0 = a1 = a2 = a3 = zero8()
    for r in range(r0, r1):
        w = changed[r] * krp + h0
        d = load8(delta, r * kcp + q0)
        a0, a1 = fma8(a0, suffix[w], d), fma8(a1, suffix[w + 1], d)
        a2, a3 = fma8(a2, suffix[w + 2], d), fma8(a3, suffix[w + 3], d)
    out = h0 * kcp + q0
    _add_to(spectrum, out, a0), _add_to(spectrum, out + kcp, a1)
    _add_to(spectrum, out + 2 * kcp, a2), _add_to(spectrum, out + 3 * kcp, a3)


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def _add_to(spectrum, index, value):  # pragma: no cover - numba
    """spectrum.flat[index:index + 8] += value."""
    store8(spectrum, index, add8(load8(spectrum, index), value))


@njit(fastmath=True, cache=True, nogil=True)
def _column_pass(delta, suffix, changed, nchg, blocks, spectrum):  # pragma: no cover - numba
    """spectrum[h, w] = sum_r suffix[changed[r], h] * delta[r, w], for the ``blocks[g]`` 8-column
    blocks that rows 4g..4g + 3 need. ``suffix`` and ``spectrum`` are flat (row-major, rows padded
    to a multiple of 4).

    Rows 0..3 (group 0) are summed in stretches of ``_SUM_ROWS`` changed rows added to the spectrum
    one after the other: the suffix sums of frequency 0 grow to sqrt(N), so one running float32 sum
    over every changed row would round ~2x worse than the dense transform (max error 5.3e-5 vs
    2.3e-5 on real 128 x 128 masks). The other groups' weights are smaller and of both signs.
    """
    krp = _ROWS * blocks.shape[0]
    spectrum[:] = 0.0
    for r0 in range(0, nchg, _SUM_ROWS):
        _rows4_group(delta, suffix, krp, changed, r0, min(r0 + _SUM_ROWS, nchg), 0, blocks[0], spectrum)
    for g in range(1, blocks.shape[0]):
        _rows4_group(delta, suffix, krp, changed, 0, nchg, g, blocks[g], spectrum)


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def _rows4_group(delta, suffix, krp, changed, r0, r1, g, nblocks, spectrum):  # pragma: no cover - numba
    """Add the changed rows r0..r1 to spectrum rows 4g..4g + 3, ``nblocks`` 8-column blocks: 4 rows
    x 16 columns (8 registers) per pass over the deltas, then 4 x 8 for an odd block."""
    q0 = 0
    for _ in range(nblocks // 2):
        _rows4_blocks2(delta, suffix, krp, changed, r0, r1, _ROWS * g, q0, spectrum)
        q0 += 2 * LANES
    if nblocks % 2:
        _rows4_block1(delta, suffix, krp, changed, r0, r1, _ROWS * g, q0, spectrum)


@njit(fastmath=KERNEL_FASTMATH, cache=True, nogil=True)
def _encode_range(flat, start, stop, n, prefix, suffix, rows, cols, blocks, out, binary):  # pragma: no cover - numba
    """Encode masks ``start:stop`` serially, with scratch buffers shared by those masks.
    ``suffix``: the flattened (row-major) suffix table."""
    kcp = prefix.shape[1]
    spectrum = np.zeros(_ROWS * blocks.shape[0] * kcp, np.float32)
    starts = np.empty(n * (n + 2), np.int32)
    offsets = np.empty(n + 1, np.int64)
    changed = np.empty(n, np.int64)
    bits = np.zeros((2, (n + 63) // 64), np.uint64)
    delta = np.empty((n, kcp), np.float32)
    for m in range(start, stop):
        nchg = _scan_rows(flat, m, n, bits, starts, offsets, changed)
        binary[m] = nchg >= 0
        if nchg < 0:
            continue
        _row_deltas(prefix, starts, offsets, nchg, delta)
        _column_pass(delta, suffix, changed, nchg, blocks, spectrum)
        for k in range(rows.shape[0]):
            out[m, k] = spectrum[rows[k] * kcp + cols[k]]


@njit(parallel=True, fastmath=KERNEL_FASTMATH, cache=True)
def _encode_parallel(flat, b, n, prefix, suffix, rows, cols, blocks, out, binary, chunk):  # pragma: no cover - numba
    n_chunks = (b + chunk - 1) // chunk
    for c in prange(n_chunks):
        _encode_range(flat, c * chunk, min(b, (c + 1) * chunk), n, prefix, suffix, rows, cols, blocks, out, binary)
