"""The backend interface: an RMSNorm implementation, its dtypes, devices and availability."""

import dataclasses
import traceback

import numpy as np

from precision_suite.dtypes import DTYPES, dtype_name, numpy_dtype
from precision_suite.errors import BackendUnavailable

# Rounding conventions, which set a backend's ULP budget.
SINGLE_ROUNDING = "single"
CAST_THEN_SCALE = "cast_then_scale"
PLANTED_FAULT = "planted_fault"


@dataclasses.dataclass(frozen=True)
class Availability:
    """Whether a backend runs a dtype on a device, and if not, why (Paddle's own text)."""

    available: bool
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class BackendOutput:
    """A backend's outputs as NumPy arrays in the output dtype."""

    out: np.ndarray
    residual_out: np.ndarray | None = None


class Backend:
    """An RMSNorm implementation under test.

    Subclasses implement `compute`. `run` is the entry point: it checks availability first,
    so a backend that cannot run a dtype or device raises `BackendUnavailable` with the
    reason instead of producing an output.

    Attributes
    ----------
    name : str
        Registry name, used in tables, flags and messages.
    description : str
        One line on what it calls.
    dtypes : tuple of str
        Dtypes it claims; the probe decides what actually runs.
    devices : tuple of str
        ``"cpu"`` and/or ``"gpu"``.
    rounding : str
        `SINGLE_ROUNDING`, `CAST_THEN_SCALE` or `PLANTED_FAULT`; selects the ULP budget.
    """

    name = ""
    description = ""
    dtypes = DTYPES
    devices = ("cpu", "gpu")
    rounding = SINGLE_ROUNDING

    def __init__(self):
        self._availability = {}

    def compute(self, x, weight, eps, residual, device):
        """Return a `BackendOutput` for NumPy inputs in the case dtype. Subclasses implement it."""
        raise NotImplementedError

    def probe(self, dtype, device, residual=False):
        """Return whether ``dtype`` runs on ``device``, from a tiny real call, cached.

        The probe runs a 2 x 8 case, with a residual when ``residual`` is true. Any
        exception makes the combination unavailable, and its text becomes the reason.
        """
        key = (dtype, device, residual)
        if key in self._availability:
            return self._availability[key]

        if dtype not in self.dtypes:
            result = Availability(False, f"{self.name} does not support {dtype} on any device; its dtypes are "
                                         f"{', '.join(self.dtypes)} where the device has the kernel")
        elif device.partition(":")[0] not in self.devices:
            result = Availability(False, f"{self.name} does not run on {device}; it runs on {', '.join(self.devices)}")
        else:
            result = self._probe_call(dtype, device, residual)
        self._availability[key] = result
        return result

    def _probe_call(self, dtype, device, residual):
        values = np.linspace(-2.0, 2.0, 16).reshape(2, 8).astype(numpy_dtype(dtype))
        weight = np.ones(8, dtype=numpy_dtype(dtype))
        try:
            self.compute(values, weight, 1e-5, values.copy() if residual else None, device)
        except BackendUnavailable as error:
            return Availability(False, str(error))
        except Exception as error:  # noqa: BLE001 - any failure of the probe call is the reason
            lines = traceback.format_exception_only(type(error), error)
            return Availability(False, " ".join(line.strip() for line in lines)[:1000])
        return Availability(True)

    def run(self, x, weight, eps, residual=None, device="cpu"):
        """Run the backend on one case's inputs after checking availability.

        Raises
        ------
        BackendUnavailable
            When the probe found that the dtype or device cannot run here.
        """
        availability = self.probe(dtype_name(x.dtype), device, residual is not None)
        if not availability.available:
            raise BackendUnavailable(availability.reason)
        return self.compute(x, weight, eps, residual, device)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"
