"""Rounded NumPy inputs made from a case spec alone.

Each input (x, weight, residual) draws from its own PCG64 stream, derived from the spec's
seed with a fixed spawn key, so changing the shape of one input never shifts another's
values. Values are drawn in float64 and rounded once to the case dtype in NumPy.
"""

import dataclasses

import numpy as np

from precision_suite.dtypes import finfo, round_to_dtype

# Spawn keys of the independent streams. Changing them changes every golden hash.
_STREAM_X = 0
_STREAM_WEIGHT = 1
_STREAM_RESIDUAL = 2


@dataclasses.dataclass(frozen=True)
class CaseInputs:
    """Rounded inputs of one case, all in the case dtype.

    Attributes
    ----------
    x : numpy.ndarray
        Input of the spec's shape.
    weight : numpy.ndarray
        Weight of shape ``(hidden_size,)``.
    residual : numpy.ndarray or None
        Residual of the spec's shape when the spec fuses one, else None.
    """

    x: np.ndarray
    weight: np.ndarray
    residual: np.ndarray | None


def _generator(seed, stream):
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(stream,))
    return np.random.Generator(np.random.PCG64(sequence))


def draw_x(spec, rng, shape):
    """Draw float64 values of ``shape`` from the spec's input distribution."""
    hidden = shape[-1]
    scale = spec.x_scale
    dist = spec.x_dist

    if dist == "normal":
        return rng.normal(0.0, scale, size=shape)
    if dist == "uniform":
        return rng.uniform(-scale, scale, size=shape)
    if dist == "constant_rows":
        row_values = rng.normal(0.0, scale, size=shape[:-1] + (1,))
        return np.broadcast_to(row_values, shape).copy()
    if dist == "zero_rows":
        values = rng.normal(0.0, scale, size=shape).reshape(-1, hidden)
        values[0::2] = 0.0
        return values.reshape(shape)
    if dist == "outlier_channels":
        values = rng.normal(0.0, scale, size=shape)
        count = max(1, hidden // 64)
        channels = rng.choice(hidden, size=count, replace=False)
        values[..., channels] *= rng.uniform(20.0, 100.0, size=count)
        return values
    if dist == "tiny":
        return rng.normal(0.0, np.sqrt(spec.eps / 100.0), size=shape)
    if dist == "fp16_overflow":
        magnitudes = rng.uniform(256.0, 2048.0, size=shape)
        return magnitudes * rng.choice(np.array([-1.0, 1.0]), size=shape)
    raise AssertionError(f"x_dist {dist!r} passed spec validation but has no rule here")


def draw_weight(spec, rng):
    """Draw the float64 weight of shape ``(hidden_size,)`` from the spec's weight distribution."""
    size = spec.hidden_size
    dist = spec.w_dist

    if dist == "ones":
        return np.ones(size)
    if dist == "near_one":
        return rng.normal(1.0, 0.1, size=size)
    if dist == "normal":
        return rng.normal(0.0, 1.0, size=size)
    if dist == "near_zero":
        return rng.normal(0.0, 1e-3, size=size)
    raise AssertionError(f"w_dist {dist!r} passed spec validation but has no rule here")


def _clip_to_half_max(values, dtype):
    """Clip float64 values to half the dtype's largest finite value.

    Large ``x_scale`` times outlier factors can pass float16's 65504, and an input that
    rounds to inf makes the reference and every kernel NaN, a case that checks nothing.
    At half the maximum, ``x + residual`` stays finite too.
    """
    limit = float(finfo(dtype).max) / 2
    return np.clip(values, -limit, limit)


def make_inputs(spec):
    """Make the rounded inputs of a case from its spec alone.

    Parameters
    ----------
    spec : CaseSpec
        The case.

    Returns
    -------
    CaseInputs
        Bit-identical for the same spec on every machine and run with the same NumPy
        release.

    Notes
    -----
    NOTE: NumPy keeps ``Generator`` streams stable in practice but does not promise it
    across releases; the golden-hash test in ``tests/test_inputs.py`` detects a change.
    """
    x = draw_x(spec, _generator(spec.seed, _STREAM_X), spec.shape)
    weight = draw_weight(spec, _generator(spec.seed, _STREAM_WEIGHT))

    residual = None
    if spec.residual:
        residual = draw_x(spec, _generator(spec.seed, _STREAM_RESIDUAL), spec.shape)

    return CaseInputs(
        x=round_to_dtype(_clip_to_half_max(x, spec.dtype), spec.dtype),
        weight=round_to_dtype(weight, spec.dtype),
        residual=None if residual is None else round_to_dtype(_clip_to_half_max(residual, spec.dtype), spec.dtype),
    )
