"""The backend registry.

`get_backend` and `list_backends` cover the production backends. Planted faults (see
`faults`) and FastDeploy's layer (see `precision_suite.e2e.fastdeploy_adapter`) register in
the same registry but are left out of default runs.
"""

import difflib

from precision_suite.backends.base import PLANTED_FAULT, Availability, Backend, BackendOutput
from precision_suite.backends.faults import PLANTED_FAULTS, NumpySingleRounding
from precision_suite.backends.paddle_backends import (
    CompositeCastThenScale,
    CompositeSingleRounding,
    FusedRmsNorm,
    PhiRmsNorm,
)
from precision_suite.errors import SpecError

_REGISTRY = {}


def register(backend, default=True):
    """Add a backend instance to the registry; ``default`` ones run when no backend is named.

    Raises
    ------
    ValueError
        When another backend already has the same name.
    """
    if backend.name in _REGISTRY:
        raise ValueError(f"backend name {backend.name!r} is already registered; pick another name")
    _REGISTRY[backend.name] = (backend, default)
    return backend


def unregister(name):
    """Remove a backend by name; used by tests that register a temporary one."""
    _REGISTRY.pop(name, None)


def get_backend(name):
    """Return the registered backend called ``name``.

    Raises
    ------
    SpecError
        When no backend has that name; the message lists the valid names.
    """
    if name not in _REGISTRY:
        raise SpecError(_unknown_name_message(name))
    return _REGISTRY[name][0]


def _unknown_name_message(name):
    """Return the error for an unknown backend name: every name by kind, then the closest ones."""
    defaults = [backend.name for backend, default in _REGISTRY.values() if default]
    faults = [backend.name for backend, _ in _REGISTRY.values() if backend.rounding == PLANTED_FAULT]
    others = [other for other in _REGISTRY if other not in defaults and other not in faults]
    message = (f"backend: unknown name {name!r}; valid names are the default backends {', '.join(defaults)}, "
               f"also {', '.join(others)} and {len(faults)} planted faults (fault_*, listed by "
               "'precision-suite backends --all')")
    suggestions = difflib.get_close_matches(name, list(_REGISTRY), n=2)
    if suggestions:
        message += f". Did you mean {' or '.join(repr(match) for match in suggestions)}?"
    return message


def list_backends(include_all=False):
    """Return the default backends in registration order, or every backend with ``include_all``."""
    return [backend for backend, default in _REGISTRY.values() if default or include_all]


def default_backend_names():
    """Return the names of the backends that run when none is named."""
    return [backend.name for backend in list_backends()]


register(PhiRmsNorm())
register(FusedRmsNorm())
register(CompositeSingleRounding())
register(CompositeCastThenScale())
register(NumpySingleRounding(), default=False)
for _fault in PLANTED_FAULTS:
    register(_fault(), default=False)


def planted_faults():
    """Return the registered planted-fault backends."""
    return [backend for backend in list_backends(include_all=True) if backend.rounding == PLANTED_FAULT]

__all__ = [
    "Availability",
    "Backend",
    "BackendOutput",
    "default_backend_names",
    "get_backend",
    "list_backends",
    "planted_faults",
    "register",
    "unregister",
]

# FastDeploy's layer wraps Paddle's kernels as two more non-default backends. The adapter
# imports this module's names, so it is imported last, and it registers them even where
# FastDeploy is missing (they then report themselves unavailable).
from precision_suite.e2e import fastdeploy_adapter  # noqa: E402,F401 - registers fastdeploy_default and _proxy
