"""Backends with known behaviour for the harness's own tests."""

import numpy as np

from precision_suite.backends.base import SINGLE_ROUNDING, Backend, BackendOutput
from precision_suite.dtypes import round_to_dtype, to_float64


class NumpyBackend(Backend):
    """A correct float64 kernel rounded once, or a faulty one through ``transform``."""

    rounding = SINGLE_ROUNDING
    devices = ("cpu",)

    def __init__(self, name, transform=None, ignore_eps=False):
        super().__init__()
        self.name = name
        self.transform = transform
        self.ignore_eps = ignore_eps

    def compute(self, x, weight, eps, residual, device):
        dtype = x.dtype
        summed = None if residual is None else round_to_dtype(to_float64(x) + to_float64(residual), dtype.name)
        source = to_float64(x if summed is None else summed)
        eps_used = 1e-6 if self.ignore_eps else eps
        out = source / np.sqrt((source * source).mean(axis=-1, keepdims=True) + eps_used) * to_float64(weight)
        output = BackendOutput(out=round_to_dtype(out, dtype.name), residual_out=summed)
        return self.transform(output) if self.transform else output
