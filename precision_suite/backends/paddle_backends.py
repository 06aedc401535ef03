"""Backends that call Paddle: the phi kernel, the fused kernel and composites of Paddle ops.

Each backend's `norm_tensor` works on Paddle tensors and normalizes over the last axis, so
the GLM4 layer can call it at every norm site; `compute` wraps it for NumPy inputs.
All Paddle calls use keyword arguments: positional calls to the norm APIs mean different
things across releases (the third positional slot of ``fused_rms_norm`` is an additive bias).
"""

from precision_suite.backends.base import (
    CAST_THEN_SCALE,
    SINGLE_ROUNDING,
    Backend,
    BackendOutput,
)
from precision_suite.backends.paddle_io import import_paddle, paddle_place, to_numpy, to_paddle


def _compute_dtype(x):
    """Return the accumulation dtype of the composites: float64 for float64 input, else float32."""
    return "float64" if str(x.dtype).endswith("float64") else "float32"


class PaddleBackend(Backend):
    """A backend whose kernel is a function of Paddle tensors."""

    def norm_tensor(self, x, weight, eps, residual=None):
        """Normalize Paddle tensor ``x`` over its last axis.

        Parameters
        ----------
        x : paddle.Tensor
            Input of rank >= 2.
        weight : paddle.Tensor
            Weight of shape ``[x.shape[-1]]`` in ``x``'s dtype.
        eps : float
            Added to the mean square.
        residual : paddle.Tensor, optional
            Added to ``x`` before the norm; the rounded sum is returned as ``residual_out``.

        Returns
        -------
        tuple
            ``(out, residual_out)``; ``residual_out`` is None without a residual.
        """
        if residual is None:
            return self.normalize(x, weight, eps), None
        summed = x + residual
        return self.normalize(summed, weight, eps), summed

    def normalize(self, x, weight, eps):
        """Return the normalized tensor without a residual. Subclasses implement it."""
        raise NotImplementedError

    def compute(self, x, weight, eps, residual, device):
        place = paddle_place(device)
        residual_tensor = None if residual is None else to_paddle(residual, place)
        out, residual_out = self.norm_tensor(to_paddle(x, place), to_paddle(weight, place), eps, residual_tensor)
        return BackendOutput(
            out=to_numpy(out),
            residual_out=None if residual_out is None else to_numpy(residual_out),
        )


class PhiRmsNorm(PaddleBackend):
    """``paddle.nn.functional.rms_norm``: the phi kernel (GPU only in every release so far)."""

    name = "paddle_phi"
    description = "paddle.nn.functional.rms_norm (phi kernel); residual added separately in the dtype"

    def normalize(self, x, weight, eps):
        paddle = import_paddle()
        functional = paddle.nn.functional
        if not hasattr(functional, "rms_norm"):
            raise RuntimeError(f"paddle {paddle.__version__} has no paddle.nn.functional.rms_norm (added in 3.3)")
        result = functional.rms_norm(input=x, normalized_shape=[x.shape[-1]], weight=weight, eps=eps)
        # 3.3.x returns (out, invvar); later releases return out alone.
        return result[0] if isinstance(result, (tuple, list)) else result


class FusedRmsNorm(PaddleBackend):
    """``paddle.incubate.nn.functional.fused_rms_norm`` with the residual fused into the kernel."""

    name = "paddle_fused"
    description = "paddle.incubate.nn.functional.fused_rms_norm (CPU: float32 only)"
    dtypes = ("float16", "bfloat16", "float32")

    def norm_tensor(self, x, weight, eps, residual=None):
        paddle = import_paddle()
        out, residual_out = paddle.incubate.nn.functional.fused_rms_norm(
            x=x,
            norm_weight=weight,
            norm_bias=None,
            epsilon=eps,
            begin_norm_axis=x.ndim - 1,
            residual=residual,
        )
        return out, (None if residual is None else residual_out)

    def normalize(self, x, weight, eps):
        return self.norm_tensor(x, weight, eps)[0]


def _add_rounded(x, residual):
    """Return ``x + residual`` computed in the wide dtype and rounded once to ``x``'s dtype.

    Paddle's CPU wheel has no float16 or bfloat16 ``add`` kernel, so the composites add in
    float32, which equals a correctly rounded add in the dtype on every device.
    NOTE: two float16 or bfloat16 values whose exponents differ by more than float32's
    extra bits can round twice here. Such a pair is off by at most 1 ulp.
    """
    compute = _compute_dtype(x)
    return (x.astype(compute) + residual.astype(compute)).astype(x.dtype)


class CompositeBackend(PaddleBackend):
    """Composite of Paddle ops; the residual add runs in the wide dtype and rounds once."""

    def norm_tensor(self, x, weight, eps, residual=None):
        if residual is None:
            return self.normalize(x, weight, eps), None
        summed = _add_rounded(x, residual)
        return self.normalize(summed, weight, eps), summed


class CompositeSingleRounding(CompositeBackend):
    """Paddle ops that normalize and scale in float32 (float64 for float64) and round once."""

    name = "paddle_composite"
    description = "Paddle ops: mean square, rsqrt and weight in float32, one rounding"

    def normalize(self, x, weight, eps):
        paddle = import_paddle()
        compute = _compute_dtype(x)
        wide = x.astype(compute)
        inverse_rms = paddle.rsqrt((wide * wide).mean(axis=-1, keepdim=True) + eps)
        return (wide * inverse_rms * weight.astype(compute)).astype(x.dtype)


class CompositeCastThenScale(CompositeBackend):
    """Paddle ops in the Llama convention: normalize in float32, round, then scale in the dtype."""

    name = "paddle_composite_cast"
    description = "Paddle ops: normalize in float32, round to the dtype, multiply by weight in the dtype"
    rounding = CAST_THEN_SCALE

    def normalize(self, x, weight, eps):
        paddle = import_paddle()
        compute = _compute_dtype(x)
        wide = x.astype(compute)
        inverse_rms = paddle.rsqrt((wide * wide).mean(axis=-1, keepdim=True) + eps)
        normalized = (wide * inverse_rms).astype(x.dtype)
        # The product of two float16 or bfloat16 values is exact in float32, so widening
        # and rounding once equals a multiply in the dtype, which the CPU wheel lacks.
        return (normalized.astype(compute) * weight.astype(compute)).astype(x.dtype)


__all__ = [
    "CAST_THEN_SCALE",
    "CompositeBackend",
    "SINGLE_ROUNDING",
    "CompositeCastThenScale",
    "CompositeSingleRounding",
    "FusedRmsNorm",
    "PaddleBackend",
    "PhiRmsNorm",
]
