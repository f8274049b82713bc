"""The run scan of the adaptive ROIAlign fast path (``maskcodec.roi_runs._run_end``) against a byte loop."""

import numpy as np
from numba import njit

from maskcodec.roi_adaptive import word_view
from maskcodec.roi_runs import _run_end


@njit
def _scan(buf, words, pos, stop, v):
    return _run_end(buf, words, pos, stop, v)


def test_run_end_matches_a_byte_loop_at_every_alignment():
    rng = np.random.default_rng(0)
    for trial in range(600):
        n = int(rng.integers(1, 90))
        buf = (rng.random(n) < rng.random()).astype(np.uint8)
        if trial % 3 == 0:  # long runs: whole equal words
            buf = np.repeat(buf[: n // 8 + 1], 8)[:n].copy()
        words = word_view(buf)
        assert words.size == (n // 8 if n >= 8 and buf.ctypes.data % 8 == 0 else 0)
        for _ in range(10):
            pos = int(rng.integers(0, n))
            stop = int(rng.integers(pos, n + 1))
            v = buf[pos] if rng.random() < 0.8 else 1 - buf[pos]
            expected = pos
            while expected < stop and buf[expected] == v:
                expected += 1
            assert _scan(buf, words, pos, stop, np.uint8(v)) == expected
            # the same answer without a word view (the byte loop)
            assert _scan(buf, np.zeros(0, np.uint64), pos, stop, np.uint8(v)) == expected
