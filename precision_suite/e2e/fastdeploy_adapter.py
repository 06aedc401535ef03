"""Backends that wrap FastDeploy's own ``RMSNorm`` layer, when FastDeploy can be imported.

``fastdeploy_default`` calls the layer's default path (``fused_rms_norm`` with the fused
residual add). ``fastdeploy_proxy`` passes a proxy norm, so the layer adds the residual
separately in the activation dtype and calls the proxy, as ``FD_USE_PHI_RMSNORM=1`` does. Both register as non-default backends, so they are listed everywhere and report
themselves unavailable, with the import error as the reason, where FastDeploy is missing.

NOTE: FastDeploy cannot be installed in this project's CI, so the calls below follow the
documented signatures ``RMSNorm(fd_config, hidden_size, eps, prefix, ...)`` and
``forward(x, residual_input, forward_meta, proxy_rmsnorm)`` but have never run. The
``fd_config`` stand-in is a guess. Because availability comes from a real probe call, a
mismatch shows up as ``unavailable`` with FastDeploy's error, not as wrong numbers.
"""

import importlib
import types

from precision_suite.backends import get_backend, list_backends, register
from precision_suite.backends.paddle_backends import PaddleBackend
from precision_suite.errors import BackendUnavailable

NORMALIZATION_MODULE = "fastdeploy.model_executor.layers.normalization"


def import_normalization():
    """Import and return FastDeploy's normalization module.

    Raises
    ------
    BackendUnavailable
        When it cannot be imported; the message keeps the import error.
    """
    try:
        return importlib.import_module(NORMALIZATION_MODULE)
    except ImportError as error:
        raise BackendUnavailable(f"{NORMALIZATION_MODULE} cannot be imported ({error}); install FastDeploy "
                                 "to run the fastdeploy backends") from None


def _phi_proxy(x, weight, eps):
    """Run the phi kernel and cast to the weight dtype, as FastDeploy's proxy function does."""
    return get_backend("paddle_phi").normalize(x, weight, eps).astype(weight.dtype)


class FastDeployRmsNorm(PaddleBackend):
    """FastDeploy's ``RMSNorm`` layer over the last axis, on its default or proxy path."""

    dtypes = ("float16", "bfloat16", "float32")

    def __init__(self, name, proxy):
        super().__init__()
        self.name = name
        self.proxy = proxy
        path = "proxy path with the phi kernel" if proxy else "default path (fused_rms_norm)"
        self.description = f"FastDeploy RMSNorm layer, {path}"

    def _layer(self, hidden, eps, weight):
        module = import_normalization()
        fd_config = types.SimpleNamespace(model_config=types.SimpleNamespace(dtype=str(weight.dtype)))
        layer = module.RMSNorm(fd_config, hidden_size=hidden, eps=eps, prefix="precision_suite.norm")
        layer.weight.set_value(weight)
        return layer

    def norm_tensor(self, x, weight, eps, residual=None):
        hidden = x.shape[-1]
        layer = self._layer(hidden, eps, weight)
        rows = x.reshape([-1, hidden])
        residual_rows = None if residual is None else residual.reshape([-1, hidden])
        out, residual_out = layer.forward(rows, residual_input=residual_rows,
                                          proxy_rmsnorm=_phi_proxy if self.proxy else None)
        return out.reshape(x.shape), (None if residual is None else residual_out.reshape(x.shape))

    def normalize(self, x, weight, eps):
        return self.norm_tensor(x, weight, eps)[0]


def register_fastdeploy_backends():
    """Register ``fastdeploy_default`` and ``fastdeploy_proxy`` unless they are registered."""
    registered = {backend.name for backend in list_backends(include_all=True)}
    for name, proxy in (("fastdeploy_default", False), ("fastdeploy_proxy", True)):
        if name not in registered:
            register(FastDeployRmsNorm(name, proxy), default=False)


register_fastdeploy_backends()
