"""Case specs: the immutable description of one RMSNorm case, its JSON form and case id."""

import dataclasses
import functools
import hashlib
import json
import math

from precision_suite.dtypes import DTYPES, check_dtype
from precision_suite.errors import SpecError

OPS = ("rms_norm",)

# Input distributions. Each entry is the rule that inputs.py implements.
X_DISTS = {
    "normal": "N(0, x_scale^2)",
    "uniform": "U(-x_scale, x_scale), mixed signs",
    "constant_rows": "each row one value c ~ N(0, x_scale^2), so the exact output is about sign(c) * weight",
    "zero_rows": "every even row all zeros, odd rows N(0, x_scale^2)",
    "outlier_channels": "N(0, x_scale^2) with a few channels 20-100x larger, as in LLM activations",
    "tiny": "N(0, eps / 100): the mean square is far below eps, so eps dominates",
    "fp16_overflow": "|x| in [256, 2048] with random signs: every element fits float16 but "
    "every square overflows it",
}

W_DISTS = {
    "ones": "all ones",
    "near_one": "N(1, 0.1^2)",
    "normal": "N(0, 1)",
    "near_zero": "N(0, 0.001^2)",
}

SEED_LIMIT = 2**64
_REQUIRED_FIELDS = ("op", "shape", "dtype", "eps", "x_dist", "w_dist", "residual", "seed")
_OPTIONAL_FIELDS = {"x_scale": 1.0}


def _fail(field, value, allowed):
    raise SpecError(f"{field}: invalid value {value!r}; expected {allowed}")


@dataclasses.dataclass(frozen=True)
class CaseSpec:
    """One RMSNorm case: everything needed to rebuild its inputs bit for bit.

    Parameters
    ----------
    op : str
        Operation under test, ``"rms_norm"``.
    shape : tuple of int
        Leading dimensions then the hidden size; rank 2 or 3, every dimension >= 1.
    dtype : str
        One of ``float16``, ``bfloat16``, ``float32``, ``float64``; inputs, weight and
        output all use it.
    eps : float
        Finite and > 0; added to the mean square before the square root.
    x_dist : str
        Input distribution, a key of `X_DISTS`.
    w_dist : str
        Weight distribution, a key of `W_DISTS`.
    residual : bool
        Whether a residual is added before the norm (the fused residual contract).
    seed : int
        Data seed in [0, 2**64).
    x_scale : float
        Scale of the ``normal``, ``uniform``, ``constant_rows``, ``zero_rows`` and
        ``outlier_channels`` distributions; finite and > 0.

    Raises
    ------
    SpecError
        When a field is invalid. The message names the field, the value and the rule.
    """

    op: str
    shape: tuple
    dtype: str
    eps: float
    x_dist: str
    w_dist: str
    residual: bool
    seed: int
    x_scale: float = 1.0

    def __post_init__(self):
        if self.op not in OPS:
            _fail("op", self.op, f"one of {', '.join(OPS)}")

        shape = self.shape
        if isinstance(shape, list):
            shape = tuple(shape)
        if not isinstance(shape, tuple) or not 2 <= len(shape) <= 3:
            _fail("shape", self.shape, "a list of 2 or 3 dimensions: leading dims, then hidden size")
        for dim in shape:
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                _fail("shape", self.shape, "whole numbers >= 1 in every dimension")
        object.__setattr__(self, "shape", shape)

        if self.dtype not in DTYPES:
            check_dtype(self.dtype)

        eps = self.eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)):
            _fail("eps", eps, "a finite number > 0")
        if not math.isfinite(eps) or eps <= 0:
            _fail("eps", eps, "a finite number > 0 (zero makes all-zero rows 0/0)")
        object.__setattr__(self, "eps", float(eps))

        if self.x_dist not in X_DISTS:
            _fail("x_dist", self.x_dist, f"one of {', '.join(X_DISTS)}")
        if self.w_dist not in W_DISTS:
            _fail("w_dist", self.w_dist, f"one of {', '.join(W_DISTS)}")
        if not isinstance(self.residual, bool):
            _fail("residual", self.residual, "true or false")

        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
            _fail("seed", seed, "a whole number in [0, 2**64)")

        scale = self.x_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            _fail("x_scale", scale, "a finite number > 0")
        if not math.isfinite(scale) or scale <= 0:
            _fail("x_scale", scale, "a finite number > 0")
        object.__setattr__(self, "x_scale", float(scale))

    @property
    def hidden_size(self):
        """Size of the normalized (last) axis."""
        return self.shape[-1]

    @property
    def rows(self):
        """Number of rows normalized independently."""
        return math.prod(self.shape[:-1])

    @property
    def num_elements(self):
        """Number of elements of the input."""
        return math.prod(self.shape)

    def to_dict(self):
        """Return the spec as a plain dict with a list shape, ready for JSON."""
        # Every field is a scalar or a tuple of ints, so no deep copy (dataclasses.asdict) is needed.
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data["shape"] = list(self.shape)
        return data

    def to_json(self):
        """Return the canonical JSON form: sorted keys, no spaces, shortest float repr."""
        return self._canonical_json

    @functools.cached_property
    def _canonical_json(self):
        # Cached: a frozen spec never changes, and rows, ids and messages all ask for it.
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @functools.cached_property
    def case_id(self):
        """Short stable name: the first 12 hex digits of the SHA-256 of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data):
        """Build a spec from a dict, naming any missing or unknown field.

        Raises
        ------
        SpecError
            For a non-dict, a missing or unknown field, or an invalid value.
        """
        if not isinstance(data, dict):
            raise SpecError(f"spec: invalid value {data!r}; expected a JSON object with fields "
                            f"{', '.join(_REQUIRED_FIELDS)}")
        missing = [name for name in _REQUIRED_FIELDS if name not in data]
        if missing:
            raise SpecError(f"{missing[0]}: missing field; a spec needs {', '.join(_REQUIRED_FIELDS)}")
        known = set(_REQUIRED_FIELDS) | set(_OPTIONAL_FIELDS)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"{unknown[0]}: unknown field; allowed fields are {', '.join(sorted(known))}")
        values = dict(_OPTIONAL_FIELDS)
        values.update(data)
        if isinstance(values["shape"], list):
            values["shape"] = tuple(values["shape"])
        return cls(**values)

    @classmethod
    def from_json(cls, text):
        """Parse a spec from JSON text. Only JSON is accepted, never pickles or code."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise SpecError(f"spec: invalid JSON ({error}); pass a JSON object or a case id") from None
        return cls.from_dict(data)

    def replace(self, **changes):
        """Return a copy with some fields changed and validated again."""
        return dataclasses.replace(self, **changes)
