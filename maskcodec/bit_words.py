"""Word-at-a-time helpers for numba kernels: 64 mask values to one uint64 bit word (a numba intrinsic
that compiles to vector compares), and the first nonzero byte of a uint64 read from bytes.

``nonzero_bits64(flat, start)`` loads ``flat[start:start + 64]`` as one LLVM vector, compares it
with 0 and with 1 and bit-casts the two ``<64 x i1>`` results to integers; on x86 this is a few
``vpcmpeq``/``vcmpps`` and ``vpmovmskb``/``vmovmskps`` instructions per 64 values, so packing a
float32 mask runs at memory bandwidth. numba has no portable way to write this as a loop (the
loop it vectorises shifts 64-bit lanes, several times slower); LLVM lowers the same IR on
other CPUs too. Used by the run-length DCT kernel (``maskcodec.dct_runs``).

``first_nonzero_byte(x)`` gives the byte scans of ``box_rle`` and ``roi_runs`` the position of
the first differing byte in a uint64 read from 8 bytes; it assumes little-endian byte order,
as numba's platforms all are.

numba's on-disk cache of a kernel is keyed on the kernel's own source file: after editing this
module, delete ``maskcodec/__pycache__/{dct_runs,box_rle,roi_runs,roi_adaptive,crop}.*.nb[ic]`` so
the kernels are compiled again.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import errors
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

_WIDTH = 64


@intrinsic
def nonzero_bits64(typingctx, flat, start):  # pragma: no cover - compiled by numba
    """``(nonzero, other)`` uint64 words of ``flat[start:start + 64]`` (bit j for value j):
    ``nonzero`` has the bits of values other than 0, ``other`` those of values neither 0 nor 1
    (NaN is both). ``flat``: a 1-D C-contiguous array of floats or integers (bool viewed as
    uint8). No bounds check: the caller guarantees ``0 <= start`` and ``start + 64 <= flat.size``.
    """
    if not (isinstance(flat, types.Array) and flat.ndim == 1 and flat.layout == "C"
            and isinstance(flat.dtype, (types.Float, types.Integer)) and isinstance(start, types.Integer)):
        raise errors.TypingError(f"nonzero_bits64 takes a 1-D C-contiguous float or integer array, got {flat}")
    sig = types.UniTuple(types.uint64, 2)(flat, start)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        start_value = context.cast(builder, args[1], signature.args[1], types.intp)
        vector_type = ir.VectorType(context.get_data_type(array_type.dtype), _WIDTH)
        pointer = builder.bitcast(builder.gep(array.data, [start_value]), vector_type.as_pointer())
        values = builder.load(pointer, align=array_type.dtype.bitwidth // 8)
        if isinstance(array_type.dtype, types.Float):
            nonzero = builder.fcmp_unordered("!=", values, ir.Constant(vector_type, [0.0] * _WIDTH))
            not_one = builder.fcmp_unordered("!=", values, ir.Constant(vector_type, [1.0] * _WIDTH))
        else:
            nonzero = builder.icmp_unsigned("!=", values, ir.Constant(vector_type, [0] * _WIDTH))
            not_one = builder.icmp_unsigned("!=", values, ir.Constant(vector_type, [1] * _WIDTH))
        word = ir.IntType(_WIDTH)
        words = [builder.bitcast(nonzero, word), builder.bitcast(builder.and_(nonzero, not_one), word)]
        return context.make_tuple(builder, signature.return_type, words)

    return sig, codegen


@njit(inline="always")
def first_nonzero_byte(x):  # pragma: no cover - compiled by numba
    """Index (0..7, int64) of the lowest nonzero byte of a nonzero uint64 ``x``: the first in memory
    of a word read from 8 bytes on a little-endian machine."""
    return np.int64(trailing_zeros(x)) >> 3
