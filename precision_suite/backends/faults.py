"""Planted faults: RMSNorm kernels with one known bug each, to prove the suite catches them.

Each fault is a NumPy kernel that follows the single-rounding contract (float32 math,
float64 for float64 cases, one final rounding; a fused residual rounded to the dtype and
normalized) except for one step. They cover the bug kinds reported against RMSNorm kernels
across frameworks: eps handling, the reduction, the weight, the fused residual and memory
writes. They are registered but left out of default runs; ``precision-suite mutants`` and
``tests/test_mutants.py`` drive them.
"""

import numpy as np

from precision_suite.backends.base import PLANTED_FAULT, Backend, BackendOutput
from precision_suite.dtypes import DTYPES, bits_dtype, dtype_name, round_to_dtype, to_float64


def _wide(dtype):
    """Return the math dtype of the contract: float64 for float64 cases, else float32."""
    return np.float64 if dtype == "float64" else np.float32


def _round_sequentially(values, dtype):
    """Sum ``values`` along the last axis left to right, rounding to ``dtype`` after every add."""
    total = np.zeros(values.shape[:-1], dtype=np.float64)
    for column in range(values.shape[-1]):
        total = to_float64(round_to_dtype(total + values[..., column], dtype))
    return total


class PlantedFault(Backend):
    """A NumPy single-rounding kernel whose steps a fault overrides one at a time.

    Attributes
    ----------
    kind : str
        The fault family: ``eps``, ``reduction``, ``weight``, ``residual`` or ``memory``.
    """

    rounding = PLANTED_FAULT
    devices = ("cpu",)
    dtypes = DTYPES
    kind = ""

    def residual_sum(self, x, residual, dtype):
        """Return the fused residual sum, rounded once to the dtype."""
        return round_to_dtype(to_float64(x) + to_float64(residual), dtype)

    def normalized_input(self, summed, residual_sum, dtype):
        """Return the tensor that is normalized: the rounded residual sum when there is one."""
        return summed if residual_sum is None else residual_sum

    def mean_square(self, wide, dtype):
        """Return the mean of squares over the last axis, in the math dtype."""
        return np.mean(wide * wide, axis=-1, keepdims=True)

    def normalize(self, wide, mean_square, eps):
        """Return ``wide / sqrt(mean_square + eps)`` in the math dtype."""
        math_dtype = wide.dtype
        return wide * (1 / np.sqrt(mean_square + math_dtype.type(eps)))

    def scale(self, normalized, weight, dtype):
        """Multiply by the weight in the math dtype and round once to the output dtype."""
        return round_to_dtype(normalized * weight.astype(normalized.dtype), dtype)

    def finish(self, out, dtype):
        """Return the output array as stored; memory faults override it."""
        return out

    def compute(self, x, weight, eps, residual, device):
        dtype = dtype_name(x.dtype)
        math_dtype = _wide(dtype)

        residual_out = None if residual is None else self.residual_sum(x, residual, dtype)
        source = self.normalized_input(x, residual_out, dtype)
        wide = to_float64(source).astype(math_dtype)

        with np.errstate(all="ignore"):
            mean_square = self.mean_square(wide, dtype)
            normalized = self.normalize(wide, mean_square, eps)
            out = self.scale(normalized, weight, dtype)
        return BackendOutput(out=self.finish(out, dtype), residual_out=residual_out)


class EpsIgnored(PlantedFault):
    name = "fault_eps_ignored"
    kind = "eps"
    description = "uses a hard-coded eps of 1e-6 instead of the one passed"

    def normalize(self, wide, mean_square, eps):
        return super().normalize(wide, mean_square, 1e-6)


class EpsAsBias(PlantedFault):
    name = "fault_eps_as_bias"
    kind = "eps"
    description = "eps lands in the additive bias slot: x * rsqrt(mean) * w + eps"

    def normalize(self, wide, mean_square, eps):
        return wide * (1 / np.sqrt(mean_square))

    def scale(self, normalized, weight, dtype):
        return round_to_dtype(normalized * weight.astype(normalized.dtype) + normalized.dtype.type(self._eps), dtype)

    def compute(self, x, weight, eps, residual, device):
        self._eps = eps
        return super().compute(x, weight, eps, residual, device)


class EpsOutsideSqrt(PlantedFault):
    name = "fault_eps_outside_sqrt"
    kind = "eps"
    description = "adds eps after the square root: x / (sqrt(mean) + eps)"

    def normalize(self, wide, mean_square, eps):
        return wide / (np.sqrt(mean_square) + wide.dtype.type(eps))


class EpsRoundedToFloat16(PlantedFault):
    name = "fault_eps_float16"
    kind = "eps"
    description = "rounds eps to float16 before use (1e-12 becomes 0, 1e-6 becomes 1.013e-6)"

    def normalize(self, wide, mean_square, eps):
        return super().normalize(wide, mean_square, float(np.float16(eps)))


class SumInInputDtype(PlantedFault):
    name = "fault_sum_in_input_dtype"
    kind = "reduction"
    description = "accumulates the sum of squares in the input dtype, rounding after every add"

    def mean_square(self, wide, dtype):
        squares = to_float64(round_to_dtype(to_float64(wide) ** 2, dtype))
        total = _round_sequentially(squares, dtype)
        return (total / wide.shape[-1])[..., None].astype(wide.dtype)


class SquaresInFloat16(PlantedFault):
    name = "fault_squares_float16"
    kind = "reduction"
    description = "squares in float16 before widening, so |x| > 256 overflows to inf"

    def mean_square(self, wide, dtype):
        squares = to_float64(round_to_dtype(to_float64(round_to_dtype(wide, "float16")) ** 2, "float16"))
        return np.mean(squares, axis=-1, keepdims=True).astype(wide.dtype)


class DivisorMinusOne(PlantedFault):
    name = "fault_divisor_n_minus_1"
    kind = "reduction"
    description = "divides the sum of squares by n - 1"

    def mean_square(self, wide, dtype):
        count = wide.shape[-1]
        return np.sum(wide * wide, axis=-1, keepdims=True) / wide.dtype.type(max(count - 1, 0))


class DivisorPlusOne(PlantedFault):
    name = "fault_divisor_n_plus_1"
    kind = "reduction"
    description = "divides the sum of squares by n + 1"

    def mean_square(self, wide, dtype):
        return np.sum(wide * wide, axis=-1, keepdims=True) / wide.dtype.type(wide.shape[-1] + 1)


class MeanSubtracted(PlantedFault):
    name = "fault_layer_norm"
    kind = "reduction"
    description = "subtracts the mean first (LayerNorm instead of RMSNorm)"

    def mean_square(self, wide, dtype):
        return np.var(wide, axis=-1, keepdims=True)

    def normalize(self, wide, mean_square, eps):
        centered = wide - np.mean(wide, axis=-1, keepdims=True)
        return centered * (1 / np.sqrt(mean_square + wide.dtype.type(eps)))


class WrongAxis(PlantedFault):
    name = "fault_wrong_axis"
    kind = "reduction"
    description = "takes the mean of squares over the first axis instead of the last"

    def mean_square(self, wide, dtype):
        return np.mean(wide * wide, axis=0, keepdims=True)


class WeightIgnored(PlantedFault):
    name = "fault_weight_ignored"
    kind = "weight"
    description = "never multiplies by the weight"

    def scale(self, normalized, weight, dtype):
        return round_to_dtype(normalized, dtype)


class WeightDoubleRounding(PlantedFault):
    name = "fault_weight_double_rounding"
    kind = "weight"
    description = "rounds the normalized value to the dtype, then multiplies by the weight and rounds again"

    def scale(self, normalized, weight, dtype):
        rounded = to_float64(round_to_dtype(normalized, dtype))
        return round_to_dtype(rounded * to_float64(weight), dtype)


class GemmaOffset(PlantedFault):
    name = "fault_gemma_offset"
    kind = "weight"
    description = "scales by 1 + weight (the Gemma convention) where plain weight is the contract"

    def scale(self, normalized, weight, dtype):
        return round_to_dtype(normalized * (1 + weight.astype(normalized.dtype)), dtype)


class ResidualOutTruncated(PlantedFault):
    name = "fault_residual_out_truncated"
    kind = "residual"
    description = "stores residual_out truncated toward zero instead of rounded to nearest"

    def residual_sum(self, x, residual, dtype):
        exact = to_float64(x) + to_float64(residual)
        nearest = round_to_dtype(exact, dtype)
        # Step one value toward zero wherever rounding moved away from zero. In a
        # sign-magnitude format, the bit pattern minus one is the neighbour toward zero.
        away = np.abs(to_float64(nearest)) > np.abs(exact)
        bits = nearest.view(bits_dtype(dtype))
        toward_zero = (bits - np.ones_like(bits)).view(nearest.dtype)
        return np.where(away, toward_zero, nearest)


class ResidualRoundedTwice(PlantedFault):
    name = "fault_residual_rounded_twice"
    kind = "residual"
    description = "rounds the residual sum through another 16-bit buffer before the dtype"

    def residual_sum(self, x, residual, dtype):
        buffer = "bfloat16" if dtype == "float16" else "float16"
        once = round_to_dtype(to_float64(x) + to_float64(residual), buffer)
        return round_to_dtype(to_float64(once), dtype)


class NormalizesUnroundedSum(PlantedFault):
    name = "fault_normalizes_unrounded_sum"
    kind = "residual"
    description = "normalizes the exact residual sum where the contract normalizes the rounded one"

    def normalized_input(self, summed, residual_sum, dtype):
        return summed if residual_sum is None else self._exact_sum

    def compute(self, x, weight, eps, residual, device):
        if residual is not None:
            self._exact_sum = to_float64(x) + to_float64(residual)
        return super().compute(x, weight, eps, residual, device)


class LastRowUnwritten(PlantedFault):
    name = "fault_last_row_unwritten"
    kind = "memory"
    description = "leaves the last row of the output at zero"

    def finish(self, out, dtype):
        out = out.copy()
        out.reshape(-1, out.shape[-1])[-1] = 0
        return out


class TailUnwritten(PlantedFault):
    name = "fault_tail_unwritten"
    kind = "memory"
    description = "leaves the hidden % 8 tail columns at zero (a vector loop with no remainder loop)"

    def finish(self, out, dtype):
        tail = out.shape[-1] % 8
        if not tail:
            return out
        out = out.copy()
        out[..., -tail:] = 0
        return out


class WrongOutputDtype(PlantedFault):
    name = "fault_wrong_output_dtype"
    kind = "memory"
    description = "returns the output in the math dtype instead of the input dtype"

    def scale(self, normalized, weight, dtype):
        return normalized * weight.astype(normalized.dtype)


class NanForZeroRows(PlantedFault):
    name = "fault_nan_for_zero_rows"
    kind = "memory"
    description = "returns NaN for all-zero rows (a zero check that divides by the raw mean)"

    def normalize(self, wide, mean_square, eps):
        normalized = super().normalize(wide, mean_square, eps)
        return np.where(mean_square == 0, np.nan, normalized).astype(wide.dtype)


PLANTED_FAULTS = (
    EpsIgnored, EpsAsBias, EpsOutsideSqrt, EpsRoundedToFloat16,
    SumInInputDtype, SquaresInFloat16, DivisorMinusOne, DivisorPlusOne, MeanSubtracted, WrongAxis,
    WeightIgnored, WeightDoubleRounding, GemmaOffset,
    ResidualOutTruncated, ResidualRoundedTwice, NormalizesUnroundedSum,
    LastRowUnwritten, TailUnwritten, WrongOutputDtype, NanForZeroRows,
)


class NumpySingleRounding(PlantedFault):
    """The fault-free NumPy kernel every planted fault derives from: the control."""

    name = "numpy_single_rounding"
    description = "NumPy float32 math rounded once; the control for the planted faults"
    rounding = "single"
