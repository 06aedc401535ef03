"""The float64 RMSNorm reference, computed from the decoded rounded inputs.

The reference never sees a backend's output. For a fused residual it follows the kernel
contract: ``residual_out`` is ``x + residual`` rounded once to the case dtype, and the
output normalizes that rounded sum.
"""

import dataclasses
import math

import numpy as np

from precision_suite.dtypes import round_to_dtype, to_float64

# Rows per block: bounds the float64 temporaries of a large case to a few blocks' worth.
DEFAULT_BLOCK_ROWS = 256


@dataclasses.dataclass(frozen=True)
class Reference:
    """Float64 reference outputs of one case.

    Attributes
    ----------
    out : numpy.ndarray
        float64 normalized output, in the input's shape.
    residual_out : numpy.ndarray or None
        The fused residual sum rounded to the case dtype (decoded to float64), or None.
    """

    out: np.ndarray
    residual_out: np.ndarray | None


def rms_norm_float64(x, weight, eps, block_rows=DEFAULT_BLOCK_ROWS):
    """Compute ``x / sqrt(mean(x**2) + eps) * weight`` over the last axis in float64.

    Parameters
    ----------
    x : numpy.ndarray
        Input of any supported dtype; decoded to float64 block by block.
    weight : numpy.ndarray
        Weight of shape ``(x.shape[-1],)``.
    eps : float
        Added to the mean square.
    block_rows : int
        Rows processed per block, which bounds temporary memory.

    Returns
    -------
    numpy.ndarray
        float64 array of ``x.shape``.
    """
    hidden = x.shape[-1]
    rows = x.reshape(-1, hidden)
    weight64 = to_float64(weight)
    out = np.empty(rows.shape, dtype=np.float64)

    exact_squares = rows.dtype != np.float64
    for start in range(0, rows.shape[0], block_rows):
        block = to_float64(rows[start:start + block_rows])
        if exact_squares:
            mean_square = np.einsum("ij,ij->i", block, block) / hidden
        else:
            mean_square = _float64_mean_square(block)
        inverse_rms = 1.0 / np.sqrt(mean_square + eps)
        np.multiply(block, inverse_rms[:, None], out=block)
        np.multiply(block, weight64, out=out[start:start + block_rows])

    return out.reshape(x.shape)


def _float64_mean_square(block):
    """Return the mean square of float64 rows with a correctly rounded sum of the squares.

    Squares of float16, bfloat16 and float32 values are exact in float64 and their float64
    sum errs by far less than an output ulp. Squares of float64 values are not, so the sum
    uses ``math.fsum``: each square errs by at most 0.5 ulp and all are positive, so the mean
    square stays within about 1 ulp for any hidden size, and the reference within a few ulp.
    """
    sums = np.fromiter((math.fsum(row) for row in block * block), dtype=np.float64, count=block.shape[0])
    return sums / block.shape[1]


def compute_reference(spec, inputs):
    """Return the float64 `Reference` for a case's rounded inputs."""
    if inputs.residual is None:
        return Reference(out=rms_norm_float64(inputs.x, inputs.weight, spec.eps), residual_out=None)

    summed = round_to_dtype(to_float64(inputs.x) + to_float64(inputs.residual), spec.dtype)
    out = rms_norm_float64(summed, inputs.weight, spec.eps)
    return Reference(out=out, residual_out=to_float64(summed))
