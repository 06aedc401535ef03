"""Moving arrays between NumPy and Paddle without changing a bit.

Paddle's ``tensor.numpy()`` returns bfloat16 as raw ``uint16`` bits, and ``paddle.to_tensor``
of a ``uint16`` array makes a bfloat16 tensor, so bfloat16 travels as its bit pattern.
Paddle's own float casts of some releases truncate instead of rounding, so inputs are
rounded in NumPy and handed over exactly.
"""

import os
import warnings

import numpy as np

from precision_suite.dtypes import dtype_name, numpy_dtype
from precision_suite.errors import BackendUnavailable, SpecError

# Environment variable that picks the GPU index for "gpu" (set per pytest-xdist worker).
GPU_INDEX_VARIABLE = "PRECISION_SUITE_GPU"
# Number of GPUs that parallel workers spread over, round-robin by worker.
GPU_COUNT_VARIABLE = "PRECISION_SUITE_GPU_COUNT"


def import_paddle():
    """Import and return paddle, or raise `BackendUnavailable` saying how to install it."""
    # Paddle warns on import when ccache is missing, which only matters for building extensions.
    warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
    try:
        import paddle
    except ImportError as error:
        raise BackendUnavailable(
            f"paddle is not installed ({error}); install the CPU wheel with "
            "pip install -e '.[cpu]' or paddlepaddle-gpu from Paddle's CUDA wheel index"
        ) from None
    return paddle


def check_device(device, option="--device"):
    """Return ``device`` if Paddle can use it here, else raise `SpecError` saying why.

    ``option`` is the flag the device came from, named at the start of the message.

    Raises
    ------
    SpecError
        For a name other than cpu, gpu or gpu:N, and for a GPU this machine does not have.
    """
    if device == "cpu":
        return device
    if not device.startswith("gpu") or not (device == "gpu" or device.removeprefix("gpu:").isdigit()):
        raise SpecError(f"{option}: invalid value {device!r}; expected cpu, gpu or gpu:N")
    try:
        paddle_place(device)
    except BackendUnavailable as error:
        raise SpecError(f"{option} {device}: no usable GPU on this machine: {error}") from None
    return device


def paddle_place(device):
    """Return the Paddle place for ``"cpu"``, ``"gpu"`` or ``"gpu:N"``.

    A bare ``"gpu"`` uses the index in ``PRECISION_SUITE_GPU`` (default 0).

    Raises
    ------
    BackendUnavailable
        When a GPU is requested and Paddle was built without CUDA or finds no device.
    """
    paddle = import_paddle()
    if device == "cpu":
        return paddle.CPUPlace()

    if not device.startswith("gpu"):
        raise BackendUnavailable(f"unknown device {device!r}; use cpu, gpu or gpu:N")
    if not paddle.is_compiled_with_cuda():
        raise BackendUnavailable(
            f"device {device!r} needs a CUDA build of Paddle, but paddle {paddle.__version__} "
            "is the CPU wheel; install paddlepaddle-gpu from Paddle's CUDA wheel index"
        )
    count = paddle.device.cuda.device_count()
    index = int(device.partition(":")[2] or os.environ.get(GPU_INDEX_VARIABLE, "0"))
    if not 0 <= index < count:
        raise BackendUnavailable(f"GPU index {index} is not present; this machine has {count} GPU(s)")
    return paddle.CUDAPlace(index)


def to_paddle(array, place):
    """Return a Paddle tensor with exactly the bits of a NumPy array of a supported dtype."""
    paddle = import_paddle()
    if dtype_name(array.dtype) == "bfloat16":
        return paddle.to_tensor(np.ascontiguousarray(array).view(np.uint16), place=place)
    return paddle.to_tensor(np.ascontiguousarray(array), place=place)


def to_numpy(tensor):
    """Return a NumPy array with exactly the bits of a Paddle tensor; bfloat16 via ml_dtypes."""
    array = tensor.numpy()
    if str(tensor.dtype).endswith("bfloat16"):
        return array.view(numpy_dtype("bfloat16"))
    return array


def paddle_dtype_name(tensor):
    """Return a tensor's dtype as one of this suite's dtype names, or Paddle's own name."""
    return str(tensor.dtype).replace("paddle.", "")
