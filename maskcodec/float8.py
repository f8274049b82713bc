"""Eight float32 lanes as one value in numba kernels: ``load8``, ``store8``, ``fma8`` and friends.

numba has no vector type, and its auto-vectoriser will not turn an 8-column accumulation into
register vectors when it cannot prove the arrays distinct (it keeps scalar loads and stores).
``Float8`` is a numba type whose LLVM form is ``<8 x float>``, so a kernel can hold a row of 8
accumulators in one register and write

    acc = zero8()
    for r in range(n):
        acc = fma8(acc, weight[r], load8(rows, r * 8))
    store8(out, 0, acc)

which compiles to one broadcast, one vector load and one vector FMA per step (AVX2 ``vfmadd``
on x86; LLVM lowers the same IR on other CPUs). Indexes are flat element offsets into a
C-contiguous float32 array of any number of dimensions, unchecked: the caller keeps
``0 <= i`` and ``i + 8 <= arr.size``. Used by the DCT kernels (``maskcodec.dct_runs``, ``maskcodec.dct_dense``, ``maskcodec.dct_decode``).

``reverse8`` flips the lane order (for mirrored rows), ``max_bits8`` / ``max_bits`` keep the
largest bit pattern seen, read as unsigned integers (a value check of floats in [0, 1]).

numba's on-disk cache of a kernel is keyed on the kernel's own source file: after editing this
module, delete ``maskcodec/__pycache__/dct_*.nb[ic]`` so the kernels are compiled again.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils, errors
from numba.extending import intrinsic, models, register_model

LANES = 8  #: float32 lanes of a Float8 value: the kernels pad their tables and tiles to multiples of it
_VECTOR = ir.VectorType(ir.FloatType(), LANES)


class Float8Type(types.Type):
    """Eight float32 values held as one LLVM vector (a register on AVX2)."""

    def __init__(self) -> None:
        super().__init__(name="Float8")


float8 = Float8Type()


@register_model(Float8Type)
class _Float8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VECTOR)


def _check_array(arr, index, name):
    if not (isinstance(arr, types.Array) and arr.layout == "C" and arr.dtype == types.float32
            and isinstance(index, types.Integer)):
        raise errors.TypingError(f"{name} takes a C-contiguous float32 array and an integer offset, got {arr}")


def _pointer(context, builder, array_type, array_value, index_type, index_value):
    array = context.make_array(array_type)(context, builder, array_value)
    offset = context.cast(builder, index_value, index_type, types.intp)
    return builder.bitcast(builder.gep(array.data, [offset]), _VECTOR.as_pointer())


@intrinsic
def load8(typingctx, arr, index):  # pragma: no cover - compiled by numba
    """The 8 values ``arr.flat[index:index + 8]`` (any alignment)."""
    _check_array(arr, index, "load8")

    def codegen(context, builder, signature, args):
        pointer = _pointer(context, builder, signature.args[0], args[0], signature.args[1], args[1])
        return builder.load(pointer, align=4)

    return float8(arr, index), codegen


@intrinsic
def store8(typingctx, arr, index, value):  # pragma: no cover - compiled by numba
    """Write ``value`` to ``arr.flat[index:index + 8]``."""
    _check_array(arr, index, "store8")
    if value != float8:
        raise errors.TypingError(f"store8 stores a Float8, got {value}")

    def codegen(context, builder, signature, args):
        pointer = _pointer(context, builder, signature.args[0], args[0], signature.args[1], args[1])
        builder.store(args[2], pointer, align=4)
        return context.get_dummy_value()

    return types.none(arr, index, value), codegen


@intrinsic
def zero8(typingctx):  # pragma: no cover - compiled by numba
    """Eight zeros."""

    def codegen(context, builder, signature, args):
        return ir.Constant(_VECTOR, [0.0] * LANES)

    return float8(), codegen


def _binary(op_name):
    def typer(typingctx, a, b):
        if a != float8 or b != float8:
            raise errors.TypingError(f"{op_name}8 takes two Float8, got {a}, {b}")

        def codegen(context, builder, signature, args):
            return getattr(builder, op_name)(args[0], args[1], flags=("fast",))

        return float8(a, b), codegen

    return typer


add8 = intrinsic(_binary("fadd"))
add8.__doc__ = "Lane-wise ``a + b``."
sub8 = intrinsic(_binary("fsub"))
sub8.__doc__ = "Lane-wise ``a - b``."


@intrinsic
def fma8(typingctx, acc, scale, value):  # pragma: no cover - compiled by numba
    """Lane-wise ``acc + scale * value`` (``scale`` a float32 scalar, broadcast), fused."""
    if acc != float8 or value != float8 or scale != types.float32:
        raise errors.TypingError(f"fma8 takes (Float8, float32, Float8), got {acc}, {scale}, {value}")

    def codegen(context, builder, signature, args):
        broadcast = builder.insert_element(ir.Constant(_VECTOR, ir.Undefined), args[1], ir.Constant(ir.IntType(32), 0))
        broadcast = builder.shuffle_vector(broadcast, broadcast, ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3), "llvm.fma.v8f32")
        return builder.call(fma, [broadcast, args[2], args[0]])

    return float8(acc, scale, value), codegen


@intrinsic
def reverse8(typingctx, value):  # pragma: no cover - compiled by numba
    """The 8 lanes of ``value`` in reverse order."""
    if value != float8:
        raise errors.TypingError(f"reverse8 takes a Float8, got {value}")

    def codegen(context, builder, signature, args):
        order = ir.Constant(ir.VectorType(ir.IntType(32), LANES), list(range(LANES - 1, -1, -1)))
        return builder.shuffle_vector(args[0], args[0], order)

    return float8(value), codegen


_BITS = ir.VectorType(ir.IntType(32), LANES)


@intrinsic
def max_bits8(typingctx, a, b):  # pragma: no cover - compiled by numba
    """Lane-wise the value whose bit pattern, read as an unsigned 32-bit integer, is larger."""
    if a != float8 or b != float8:
        raise errors.TypingError(f"max_bits8 takes two Float8, got {a}, {b}")

    def codegen(context, builder, signature, args):
        x, y = builder.bitcast(args[0], _BITS), builder.bitcast(args[1], _BITS)
        return builder.bitcast(builder.select(builder.icmp_unsigned(">", x, y), x, y), _VECTOR)

    return float8(a, b), codegen


@intrinsic
def max_bits(typingctx, value):  # pragma: no cover - compiled by numba
    """The largest bit pattern of the 8 lanes, as a uint32."""
    if value != float8:
        raise errors.TypingError(f"max_bits takes a Float8, got {value}")

    def codegen(context, builder, signature, args):
        reduce = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), [_BITS]),
                                                "llvm.vector.reduce.umax.v8i32")
        return builder.call(reduce, [builder.bitcast(args[0], _BITS)])

    return types.uint32(value), codegen


@intrinsic
def prefetch(typingctx, arr, index):  # pragma: no cover - compiled by numba
    """Hint that ``arr.flat[index]`` will be read soon (a cache-line prefetch; no effect on values,
    any index inside the array)."""
    _check_array(arr, index, "prefetch")

    def codegen(context, builder, signature, args):
        pointer = builder.bitcast(_pointer(context, builder, signature.args[0], args[0], signature.args[1], args[1]),
                                  ir.IntType(8).as_pointer())
        hint = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()] + [ir.IntType(32)] * 3),
            "llvm.prefetch.p0i8")
        i32 = ir.IntType(32)
        builder.call(hint, [pointer, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, index), codegen
