"""Hypothesis strategies for case specs, and the suite's Hypothesis profiles.

Strategies generate specs, never arrays, so shrinking moves toward smaller shapes, the
common eps values and the plain ``normal`` distribution. Each strategy lists its choices
in the order that shrinking prefers.
"""

import dataclasses

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from precision_suite.dtypes import DTYPES
from precision_suite.errors import SpecError
from precision_suite.spec import SEED_LIMIT, W_DISTS, X_DISTS, CaseSpec

PROFILES = ("dev", "ci", "nightly")
DEFAULT_PROFILE = "ci"

# Hidden sizes real kernels get wrong: 1, primes, odd sizes, vector-width multiples and the
# model sizes that cross vectorized code paths (769 = 768 + 1, 12289 = 12288 + 1).
INTERESTING_HIDDEN_SIZES = (
    1, 2, 3, 4, 5, 7, 8, 13, 16, 31, 32, 63, 64, 97, 127, 128, 255, 256, 257, 509, 512, 769,
    1024, 1031, 2048, 3584, 4096, 5120, 8192, 12289, 16384,
)
COMMON_EPS = (1e-5, 1e-6)


@dataclasses.dataclass(frozen=True)
class ShapeLimits:
    """Bounds on generated shapes for one profile."""

    max_hidden: int
    max_elements: int
    max_rows: int


SHAPE_LIMITS = {
    "dev": ShapeLimits(max_hidden=4096, max_elements=1 << 16, max_rows=64),
    "ci": ShapeLimits(max_hidden=4096, max_elements=1 << 15, max_rows=32),
    "nightly": ShapeLimits(max_hidden=16384, max_elements=1 << 22, max_rows=1024),
}


def check_profile(name):
    """Return ``name`` if it is a known profile, else raise `SpecError` listing them."""
    if name not in PROFILES:
        raise SpecError(f"profile: unknown name {name!r}; valid names are {', '.join(PROFILES)}")
    return name


def hidden_sizes(max_hidden):
    """Strategy for hidden sizes: small integers first, then the interesting sizes up to ``max_hidden``."""
    interesting = [size for size in INTERESTING_HIDDEN_SIZES if size <= max_hidden]
    return st.one_of(st.integers(1, min(64, max_hidden)), st.sampled_from(interesting),
                     st.integers(1, max_hidden))


def epsilons():
    """Strategy for eps: 1e-5 and 1e-6 first, else log-uniform over [1e-12, 1e-1]."""
    log_uniform = st.floats(-12.0, -1.0, allow_nan=False, allow_infinity=False).map(lambda exponent: 10.0 ** exponent)
    return st.one_of(st.sampled_from(COMMON_EPS), log_uniform)


def input_scales():
    """Strategy for ``x_scale``: powers of ten from 1e-3 to 1e3, shrinking toward 1."""
    return st.integers(-3, 3).map(lambda exponent: 10.0 ** exponent)


@st.composite
def shapes(draw, limits):
    """Strategy for rank-2 or rank-3 shapes within a profile's `ShapeLimits`."""
    hidden = draw(hidden_sizes(limits.max_hidden))
    max_rows = max(1, min(limits.max_rows, limits.max_elements // hidden))
    if draw(st.booleans()):
        batch = draw(st.integers(1, max(1, min(8, max_rows))))
        sequence = draw(st.integers(1, max(1, max_rows // batch)))
        return (batch, sequence, hidden)
    return (draw(st.integers(1, max_rows)), hidden)


def case_specs(dtypes=DTYPES, profile=DEFAULT_PROFILE, residual=None):
    """Strategy for RMSNorm `CaseSpec` values.

    Parameters
    ----------
    dtypes : sequence of str
        Dtypes to draw from.
    profile : str
        Profile whose `ShapeLimits` bound the shapes.
    residual : bool, optional
        Fix the residual flag; drawn when None.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Specs with every input distribution (scaled ones with ``x_scale`` from 1e-3 to 1e3),
        every weight distribution, eps from `epsilons`, and seeds over [0, 2**64).
    """
    limits = SHAPE_LIMITS[check_profile(profile)]
    dtype_names = list(dtypes)
    if not dtype_names:
        raise SpecError("dtypes: empty; pass at least one of " + ", ".join(DTYPES))
    return st.builds(
        CaseSpec,
        op=st.just("rms_norm"),
        shape=shapes(limits),
        dtype=st.sampled_from(dtype_names),
        eps=epsilons(),
        x_dist=st.sampled_from(list(X_DISTS)),
        w_dist=st.sampled_from(list(W_DISTS)),
        residual=st.booleans() if residual is None else st.just(residual),
        seed=st.integers(0, SEED_LIMIT - 1),
        x_scale=input_scales(),
    )


def register_profiles(database_dir=".hypothesis/examples"):
    """Register the ``dev``, ``ci`` and ``nightly`` Hypothesis profiles.

    - ``ci``: 100 examples per backend and dtype, derandomized and without a database, so
      every run generates the same case ids; no target phase.
    - ``dev``: 25 examples, random, failures saved in ``database_dir`` and replayed first.
    - ``nightly``: 600 examples with larger shapes and the target phase, which climbs toward
      each backend's worst ULP error; failures saved in ``database_dir``.
    """
    common = dict(deadline=None, print_blob=True, report_multiple_bugs=False,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.function_scoped_fixture])
    no_target = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]
    settings.register_profile("ci", max_examples=100, derandomize=True, database=None, phases=no_target, **common)
    settings.register_profile("dev", max_examples=25, database=DirectoryBasedExampleDatabase(database_dir),
                              phases=no_target, **common)
    settings.register_profile("nightly", max_examples=600, database=DirectoryBasedExampleDatabase(database_dir),
                              phases=list(Phase), **common)


def active_profile():
    """Return the name of the loaded Hypothesis profile, or `DEFAULT_PROFILE` for any other."""
    name = settings.get_current_profile_name()
    return name if name in PROFILES else DEFAULT_PROFILE
