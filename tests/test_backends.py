"""The backend registry, availability probes and bit-exact transfer to Paddle."""

import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from precision_suite.backends import get_backend, list_backends, register, unregister
from precision_suite.backends.paddle_io import to_numpy, to_paddle
from precision_suite.errors import SpecError
from precision_suite.inputs import make_inputs
from precision_suite.spec import CaseSpec
from tests.helpers import NumpyBackend

paddle = pytest.importorskip("paddle")
cpu_only = pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="checks the CPU wheel's gaps")


def test_unknown_backend_lists_names():
    with pytest.raises(SpecError) as raised:
        get_backend("paddle_fast")
    message = str(raised.value)
    assert message.startswith("backend: unknown name 'paddle_fast'; valid names are the default backends "
                              "paddle_phi, paddle_fused, paddle_composite, paddle_composite_cast, also ")
    assert "numpy_single_rounding" in message
    assert "fault_weight_ignored" not in message
    assert message.endswith(". Did you mean 'paddle_fused' or 'paddle_phi'?")


def test_unknown_backend_without_close_name():
    with pytest.raises(SpecError) as raised:
        get_backend("cudnn")
    message = str(raised.value)
    assert "Did you mean" not in message
    assert message.endswith("planted faults (fault_*, listed by 'precision-suite backends --all')")


def test_default_backends():
    names = [backend.name for backend in list_backends()]
    assert names == ["paddle_phi", "paddle_fused", "paddle_composite", "paddle_composite_cast"]


def test_fastdeploy_backends_registered_on_import():
    # A new process, so no other test has imported the e2e modules first.
    code = ("from precision_suite.backends import get_backend, list_backends\n"
            "names = [backend.name for backend in list_backends(include_all=True)]\n"
            "print(' '.join(names))\n"
            "print(get_backend('fastdeploy_proxy').name)\n")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)

    assert completed.returncode == 0, completed.stderr[-2000:]
    names, proxy = completed.stdout.strip().splitlines()[-2:]
    assert "fastdeploy_default" in names.split()
    assert proxy == "fastdeploy_proxy"
    assert "fastdeploy_default" not in [backend.name for backend in list_backends()]


def test_pytest_accepts_fastdeploy_backend(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "pytest", "cases/test_rms_norm.py", "-m", "precision", "-p", "no:cacheprovider",
               "-q", "-rs", "--precision-out", str(tmp_path), "--precision-backend", "fastdeploy_default",
               "--precision-dtype", "float32"]
    completed = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)

    assert completed.returncode == 0, completed.stdout[-3000:]
    assert "fastdeploy_default unavailable for float32" in completed.stdout
    assert "1 skipped" in completed.stdout


def test_register_rejects_duplicate():
    with pytest.raises(ValueError, match="already registered"):
        register(NumpyBackend("paddle_fused"))


def test_register_and_unregister():
    register(NumpyBackend("temporary"), default=False)
    try:
        assert get_backend("temporary").name == "temporary"
        assert "temporary" not in [backend.name for backend in list_backends()]
    finally:
        unregister("temporary")


@cpu_only
def test_phi_unavailable_on_cpu_with_paddle_reason():
    availability = get_backend("paddle_phi").probe("float32", "cpu")
    assert not availability.available
    assert "rms_norm" in availability.reason
    assert "not registered" in availability.reason


@cpu_only
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_fused_cpu_float32_only(dtype):
    fused = get_backend("paddle_fused")
    assert fused.probe("float32", "cpu").available
    assert "not registered" in fused.probe(dtype, "cpu").reason


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_composites_available_everywhere(dtype):
    for name in ("paddle_composite", "paddle_composite_cast"):
        assert get_backend(name).probe(dtype, "cpu", residual=True).available


@cpu_only
def test_gpu_unavailable_reason_on_cpu_wheel():
    reason = get_backend("paddle_composite").probe("float32", "gpu").reason
    assert "needs a CUDA build of Paddle" in reason


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32])
def test_paddle_round_trip_bit_exact(dtype):
    values = np.array([0.0, -0.0, 1e-8, 3.14159, -65504.0, np.inf, np.nan]).astype(dtype)
    back = to_numpy(to_paddle(values, paddle.CPUPlace()))
    assert back.dtype == values.dtype
    assert values.tobytes() == back.tobytes()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_composite_single_rounding_matches_exact_rounding(dtype):
    spec = CaseSpec(op="rms_norm", shape=(16, 256), dtype=dtype, eps=1e-6, x_dist="normal", w_dist="near_one",
                    residual=True, seed=4)
    inputs = make_inputs(spec)
    composite = get_backend("paddle_composite").run(inputs.x, inputs.weight, spec.eps, inputs.residual)
    exact = NumpyBackend("exact").run(inputs.x, inputs.weight, spec.eps, inputs.residual)

    assert composite.residual_out.tobytes() == exact.residual_out.tobytes()
    assert np.mean(composite.out.view(np.uint16) == exact.out.view(np.uint16)) > 0.99


class FakePhiKernel:
    """Stands in for the GPU-only phi kernel: records its arguments and returns what a release returns."""

    def __init__(self, returns_tuple):
        self.returns_tuple = returns_tuple
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        x, weight, eps = kwargs["input"], kwargs["weight"], kwargs["eps"]
        wide = x.astype("float32")
        inverse_rms = paddle.rsqrt((wide * wide).mean(axis=-1, keepdim=True) + eps)
        out = (wide * inverse_rms * weight.astype("float32")).astype(x.dtype)
        return (out, inverse_rms) if self.returns_tuple else out


@pytest.mark.parametrize("returns_tuple", [True, False], ids=["out-and-invvar", "out-only"])
def test_phi_backend_keyword_call_and_both_return_forms(monkeypatch, returns_tuple):
    fake = FakePhiKernel(returns_tuple)
    monkeypatch.setattr(paddle.nn.functional, "rms_norm", fake)
    phi = type(get_backend("paddle_phi"))()
    spec = CaseSpec(op="rms_norm", shape=(3, 40), dtype="float32", eps=1e-5, x_dist="normal", w_dist="near_one",
                    residual=False, seed=2)
    inputs = make_inputs(spec)

    output = phi.run(inputs.x, inputs.weight, spec.eps)

    args, kwargs = fake.calls[-1]
    assert args == ()
    assert set(kwargs) == {"input", "normalized_shape", "weight", "eps"}
    assert kwargs["normalized_shape"] == [40]
    assert output.out.shape == (3, 40)
    composite = get_backend("paddle_composite").run(inputs.x, inputs.weight, spec.eps)
    assert output.out.tobytes() == composite.out.tobytes()
