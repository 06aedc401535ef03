"""The float64 RMSNorm reference, computed from the decoded rounded inputs.

The reference never sees a backend's output. For a fused residual it follows the kernel
contract: ``residual_out`` is ``x + residual`` rounded once to the case dtype, and the
output normalizes that rounded sum.
"""

import dataclasses

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

    for start in range(0, rows.shape[0], block_rows):
        block = to_float64(rows[start:start + block_rows])
        mean_square = np.einsum("ij,ij->i", block, block) / hidden
        inverse_rms = 1.0 / np.sqrt(mean_square + eps)
        np.multiply(block, inverse_rms[:, None], out=block)
        np.multiply(block, weight64, out=out[start:start + block_rows])

    return out.reshape(x.shape)


def compute_reference(spec, inputs):
    """Return the float64 `Reference` for a case's rounded inputs."""
    if inputs.residual is None:
        return Reference(out=rms_norm_float64(inputs.x, inputs.weight, spec.eps), residual_out=None)

    summed = round_to_dtype(to_float64(inputs.x) + to_float64(inputs.residual), spec.dtype)
    out = rms_norm_float64(summed, inputs.weight, spec.eps)
    return Reference(out=out, residual_out=to_float64(summed))
