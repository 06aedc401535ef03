"""Norm modes: which backend runs each RMSNorm site, and a record of what actually ran.

A mode maps each norm site of the layer to a backend and a residual path. ``fused`` hands
the residual to the backend's own fused add. ``separate`` adds it first in the activation
dtype and gives the backend the rounded sum, as FastDeploy's proxy path does.

The three FastDeploy modes need GPU kernels (``default`` and ``phi_proxy`` use the fused
kernel, which the CPU wheel runs in float32 only, and ``phi_proxy`` and ``all_phi`` use the
phi kernel, which has no CPU kernel). The composite modes run anywhere and stand in for them
in CPU runs.

`NormSiteRecorder` wraps every registered backend while a stack runs and notes, for each
site call, which backend's code executed. `check_coverage` compares that with the mode, so
a site that silently calls another implementation (or none) fails the run.
"""

import contextlib
import dataclasses

from precision_suite.backends import get_backend, list_backends
from precision_suite.backends.base import Availability
from precision_suite.e2e import fastdeploy_adapter  # noqa: F401 - registers the fastdeploy backends
from precision_suite.errors import SpecError

SITES = ("input_norm", "q_norm", "k_norm", "post_attention_norm", "final_norm")
# Sites that add the residual stream before normalizing.
RESIDUAL_SITES = ("input_norm", "post_attention_norm", "final_norm")

FUSED = "fused"
SEPARATE = "separate"
NO_RESIDUAL = "none"


@dataclasses.dataclass(frozen=True)
class SitePlan:
    """The backend of one norm site and how its residual is added (`FUSED` or `SEPARATE`)."""

    backend: str
    residual: str = FUSED


@dataclasses.dataclass(frozen=True)
class Mode:
    """A named assignment of backends to the norm sites."""

    name: str
    description: str
    sites: dict

    def backend_names(self):
        """Return the distinct backend names the mode uses, in site order."""
        return list(dict.fromkeys(plan.backend for plan in self.sites.values()))


def _uniform(backend, residual):
    return {site: SitePlan(backend, residual) for site in SITES}


def _proxy(proxy_backend):
    """Return FastDeploy's proxy assignment: ``proxy_backend`` at the input and post-attention norms."""
    sites = _uniform("paddle_fused", FUSED)
    sites["input_norm"] = SitePlan(proxy_backend, SEPARATE)
    sites["post_attention_norm"] = SitePlan(proxy_backend, SEPARATE)
    return sites


def _fastdeploy_proxy():
    """Return the FastDeploy layer's proxy assignment; the layer adds the residual itself."""
    sites = _uniform("fastdeploy_default", FUSED)
    sites["input_norm"] = SitePlan("fastdeploy_proxy", FUSED)
    sites["post_attention_norm"] = SitePlan("fastdeploy_proxy", FUSED)
    return sites


MODES = {
    mode.name: mode for mode in (
        Mode("default", "FastDeploy default: fused_rms_norm with the fused residual add at every site",
             _uniform("paddle_fused", FUSED)),
        Mode("phi_proxy", "FastDeploy with FD_USE_PHI_RMSNORM=1: separate add and the phi kernel at the input "
             "and post-attention norms; q/k and final norms keep fused_rms_norm", _proxy("paddle_phi")),
        Mode("all_phi", "the phi kernel at every site, residual added separately in the activation dtype",
             _uniform("paddle_phi", SEPARATE)),
        Mode("fastdeploy_default", "FastDeploy's own RMSNorm layer on its default path at every site",
             _uniform("fastdeploy_default", FUSED)),
        Mode("fastdeploy_proxy", "FastDeploy's own RMSNorm layer with the phi proxy at the input and "
             "post-attention norms, its default path elsewhere", _fastdeploy_proxy()),
        Mode("proxy_composite", "phi_proxy with the single-rounding composite standing in for the phi kernel",
             _proxy("paddle_composite")),
        Mode("all_composite", "the single-rounding composite of Paddle ops at every site",
             _uniform("paddle_composite", SEPARATE)),
        Mode("all_composite_cast", "the cast-then-scale (Hugging Face) composite at every site",
             _uniform("paddle_composite_cast", SEPARATE)),
    )
}


def get_mode(name):
    """Return the mode called ``name``.

    Raises
    ------
    SpecError
        When no mode has that name; the message lists the valid names.
    """
    if name not in MODES:
        raise SpecError(f"mode: unknown name {name!r}; valid names are {', '.join(MODES)}")
    return MODES[name]


def mode_availability(mode, dtype, device, sites=SITES):
    """Return whether every backend of ``mode`` runs ``dtype`` on ``device`` at ``sites``.

    Each site's backend is probed with a residual when the site fuses one, so a backend
    whose fused residual path is missing on the device makes the mode unavailable. The
    reason names the site and repeats the backend's own reason.
    """
    for site in sites:
        plan = mode.sites[site]
        fused_residual = site in RESIDUAL_SITES and plan.residual == FUSED
        availability = get_backend(plan.backend).probe(dtype, device, residual=fused_residual)
        if not availability.available:
            return Availability(False, f"mode {mode.name} needs {plan.backend} at {site}: {availability.reason}")
    return Availability(True)


@dataclasses.dataclass
class SiteCall:
    """One call of a norm site and the backends whose code ran inside it.

    Attributes
    ----------
    layer : int
        Model index of the layer (the last layer for ``final_norm``).
    site : str
        One of `SITES`.
    has_residual : bool
        Whether the site was given a residual.
    backends : list of str
        Names of the backends entered from this site, outermost calls only.
    fused_residual : list of bool
        For each entry of ``backends``, whether that call received the residual.
    """

    layer: int
    site: str
    has_residual: bool
    backends: list = dataclasses.field(default_factory=list)
    fused_residual: list = dataclasses.field(default_factory=list)

    @property
    def residual_path(self):
        """`FUSED`, `SEPARATE` or `NO_RESIDUAL`, as observed."""
        if not self.has_residual:
            return NO_RESIDUAL
        return FUSED if any(self.fused_residual) else SEPARATE


class NormSiteRecorder:
    """Records which registered backend ran inside each norm site call.

    Use `tracing` around a run and `site` around each site call. While tracing, the
    ``norm_tensor`` and ``normalize`` methods of every registered backend instance are
    wrapped. A call made inside another traced call (a backend calling its own helpers)
    is not recorded again.
    """

    _TRACED_METHODS = ("norm_tensor", "normalize")

    def __init__(self):
        self.calls = []
        self._active = None
        self._depth = 0

    @contextlib.contextmanager
    def tracing(self):
        """Wrap every registered backend for the duration of the block."""
        wrapped = []
        try:
            for backend in list_backends(include_all=True):
                for method in self._TRACED_METHODS:
                    if hasattr(backend, method) and method not in vars(backend):
                        setattr(backend, method, self._traced(backend, getattr(backend, method)))
                        wrapped.append((backend, method))
            yield self
        finally:
            for backend, method in wrapped:
                delattr(backend, method)

    def _traced(self, backend, method):
        def traced(*args, **kwargs):
            if self._depth == 0 and self._active is not None:
                residual = kwargs.get("residual", args[3] if len(args) > 3 else None)
                self._active.backends.append(backend.name)
                self._active.fused_residual.append(residual is not None)
            self._depth += 1
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1

        return traced

    @contextlib.contextmanager
    def site(self, layer, site, has_residual):
        """Attribute the backend calls inside the block to ``site`` of ``layer``."""
        call = SiteCall(layer=layer, site=site, has_residual=has_residual)
        previous, self._active = self._active, call
        try:
            yield call
        finally:
            self._active = previous
            self.calls.append(call)


class NormDispatcher:
    """Runs each norm site of a layer with the backend and residual path its mode names.

    Parameters
    ----------
    mode : Mode
        The site assignment.
    add : callable
        ``add(x, residual)`` in the activation dtype, for the `SEPARATE` residual path.
    recorder : NormSiteRecorder
        Receives one `SiteCall` per call.
    """

    def __init__(self, mode, add, recorder):
        self.mode = mode
        self.add = add
        self.recorder = recorder

    def backend_for(self, site):
        """Return the backend instance that the mode names for ``site``."""
        return get_backend(self.mode.sites[site].backend)

    def apply(self, site, layer, x, weight, eps, residual=None):
        """Normalize Paddle tensor ``x`` at ``site`` over its last axis.

        Returns
        -------
        tuple
            ``(out, residual_out)``: ``residual_out`` is the rounded ``x + residual``, or
            None without a residual.
        """
        backend = self.backend_for(site)
        with self.recorder.site(layer, site, residual is not None):
            if residual is not None and self.mode.sites[site].residual == SEPARATE:
                summed = self.add(x, residual)
                out, _ = backend.norm_tensor(summed, weight, eps)
                return out, summed
            return backend.norm_tensor(x, weight, eps, residual)


def expected_sites(config, layers):
    """Return the ``(layer, site)`` pairs a stack over model layers ``layers`` must call."""
    pairs = []
    for layer in layers:
        pairs.append((layer, "input_norm"))
        if config.use_qk_norm:
            pairs.extend([(layer, "q_norm"), (layer, "k_norm")])
        pairs.append((layer, "post_attention_norm"))
    pairs.append((layers[-1], "final_norm"))
    return pairs


@dataclasses.dataclass(frozen=True)
class SiteCoverage:
    """Requested and observed implementation of one norm site over a run.

    ``actual_backend`` joins the distinct observed backend names with ``+``, and is empty
    when the site ran no registered backend. ``status`` is ``passed`` when every call of
    the site ran exactly the requested backend on the requested residual path.
    """

    layer: int
    site: str
    requested_backend: str
    requested_residual: str
    actual_backend: str
    actual_residual: str
    calls: int
    status: str
    message: str

    def fields(self):
        """Return the columns of a ``norm_sites`` row."""
        return dataclasses.asdict(self)


def _site_verdict(plan, requested_residual, calls):
    """Return the failure message of one site's calls, or an empty string when they match."""
    if not calls:
        return "the site was never called"
    for call in calls:
        if call.backends != [plan.backend]:
            ran = ", ".join(call.backends) if call.backends else "no registered backend"
            return f"requested {plan.backend} but {ran} ran"
        if call.residual_path != requested_residual:
            return f"requested the {requested_residual} residual path but the {call.residual_path} path ran"
    return ""


def check_coverage(mode, calls, sites):
    """Compare recorded site calls with what ``mode`` requests.

    Parameters
    ----------
    mode : Mode
        The mode of the run.
    calls : list of SiteCall
        From `NormSiteRecorder.calls`.
    sites : list of (int, str)
        Expected ``(layer, site)`` pairs, from `expected_sites`.

    Returns
    -------
    list of SiteCoverage
        One per expected site, then one per recorded site that was not expected.
    """
    by_site = {}
    for call in calls:
        by_site.setdefault((call.layer, call.site), []).append(call)

    coverage = []
    for layer, site in list(sites) + sorted(set(by_site) - set(sites)):
        plan = mode.sites[site]
        site_calls = by_site.get((layer, site), [])
        has_residual = any(call.has_residual for call in site_calls)
        requested_residual = plan.residual if has_residual else NO_RESIDUAL
        message = _site_verdict(plan, requested_residual, site_calls)
        if (layer, site) not in sites:
            message = "the site ran but the configuration has no such site"
        observed = dict.fromkeys(name for call in site_calls for name in call.backends)
        paths = dict.fromkeys(call.residual_path for call in site_calls)
        coverage.append(SiteCoverage(
            layer=layer,
            site=site,
            requested_backend=plan.backend,
            requested_residual=requested_residual,
            actual_backend="+".join(observed),
            actual_residual="+".join(paths),
            calls=len(site_calls),
            status="failed" if message else "passed",
            message=message,
        ))
    return coverage
