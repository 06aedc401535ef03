"""Norm modes, the norm-site coverage check with planted faults, and the FastDeploy adapter."""

import pytest

from precision_suite.backends import get_backend, list_backends
from precision_suite.e2e import layer_paddle
from precision_suite.e2e.config import make_case
from precision_suite.e2e.fastdeploy_adapter import NORMALIZATION_MODULE
from precision_suite.e2e.modes import MODES, NormDispatcher, get_mode, mode_availability
from precision_suite.e2e.runner import norm_site_rows, run_stack
from precision_suite.errors import SpecError


def _sites(rows):
    return {(row["layer"], row["site"]): row for row in rows}


def _run_tiny(mode="all_composite", dtype="float32", **overrides):
    stack = run_stack(make_case("tiny", tokens=4, layers=2, **overrides), dtype, [mode])
    return stack, norm_site_rows(stack)


def test_coverage_passes_for_every_site():
    _, rows = _run_tiny()

    sites = _sites(rows)
    assert set(sites) == {
        (0, "input_norm"), (0, "q_norm"), (0, "k_norm"), (0, "post_attention_norm"),
        (1, "input_norm"), (1, "q_norm"), (1, "k_norm"), (1, "post_attention_norm"), (1, "final_norm"),
    }
    for row in rows:
        assert row["status"] == "passed", row
        assert row["actual_backend"] == "paddle_composite"
    assert sites[(0, "input_norm")]["actual_residual"] == "none"
    assert sites[(1, "input_norm")]["actual_residual"] == "separate"


def test_coverage_skips_qk_sites_without_qk_norm():
    _, rows = _run_tiny(use_qk_norm=False)

    assert not {row["site"] for row in rows} & {"q_norm", "k_norm"}


def test_default_mode_fuses_residual_on_cpu_float32():
    _, rows = _run_tiny("default")

    sites = _sites(rows)
    assert all(row["status"] == "passed" for row in rows)
    assert sites[(1, "post_attention_norm")]["actual_residual"] == "fused"
    assert sites[(1, "final_norm")]["actual_backend"] == "paddle_fused"


def test_q_norm_using_other_backend_fails(monkeypatch):
    original = NormDispatcher.backend_for

    def planted(self, site):
        return get_backend("paddle_composite_cast") if site == "q_norm" else original(self, site)

    monkeypatch.setattr(NormDispatcher, "backend_for", planted)
    _, rows = _run_tiny()

    sites = _sites(rows)
    for layer in (0, 1):
        assert sites[(layer, "q_norm")]["status"] == "failed"
        assert sites[(layer, "q_norm")]["actual_backend"] == "paddle_composite_cast"
        assert "requested paddle_composite but paddle_composite_cast ran" in sites[(layer, "q_norm")]["message"]
        assert sites[(layer, "k_norm")]["status"] == "passed"


def test_norm_outside_backends_fails(monkeypatch):
    original = NormDispatcher.apply

    def planted(self, site, layer, x, weight, eps, residual=None):
        if site != "k_norm":
            return original(self, site, layer, x, weight, eps, residual)
        with self.recorder.site(layer, site, False):
            paddle = layer_paddle.import_paddle()
            wide = x.astype("float32")
            scale = paddle.rsqrt((wide * wide).mean(axis=-1, keepdim=True) + eps)
            return (wide * scale * weight.astype("float32")).astype(x.dtype), None

    monkeypatch.setattr(NormDispatcher, "apply", planted)
    _, rows = _run_tiny()

    row = _sites(rows)[(0, "k_norm")]
    assert row["status"] == "failed"
    assert row["actual_backend"] == ""
    assert "no registered backend ran" in row["message"]


def test_fused_residual_in_separate_mode_fails(monkeypatch):
    original = NormDispatcher.apply

    def planted(self, site, layer, x, weight, eps, residual=None):
        if site != "post_attention_norm":
            return original(self, site, layer, x, weight, eps, residual)
        with self.recorder.site(layer, site, True):
            return self.backend_for(site).norm_tensor(x, weight, eps, residual)

    monkeypatch.setattr(NormDispatcher, "apply", planted)
    _, rows = _run_tiny()

    row = _sites(rows)[(1, "post_attention_norm")]
    assert row["status"] == "failed"
    assert "requested the separate residual path but the fused path ran" in row["message"]


def test_tracing_restores_backends():
    backend = get_backend("paddle_composite")

    _run_tiny()

    assert "norm_tensor" not in vars(backend)
    assert "normalize" not in vars(backend)


def test_unknown_mode_lists_valid_names():
    with pytest.raises(SpecError, match="phi_proxy"):
        get_mode("phi")


@pytest.mark.parametrize("mode", ["phi_proxy", "all_phi"])
def test_phi_modes_unavailable_on_cpu(mode):
    availability = mode_availability(get_mode(mode), "float32", "cpu")

    assert not availability.available
    assert "paddle_phi" in availability.reason


def test_default_mode_unavailable_in_bfloat16_on_cpu():
    availability = mode_availability(get_mode("default"), "bfloat16", "cpu")

    assert not availability.available
    assert "paddle_fused" in availability.reason


def test_phi_proxy_keeps_fused_at_qk_and_final():
    sites = MODES["phi_proxy"].sites

    assert sites["input_norm"].backend == "paddle_phi"
    assert sites["input_norm"].residual == "separate"
    assert sites["post_attention_norm"].backend == "paddle_phi"
    for site in ("q_norm", "k_norm", "final_norm"):
        assert sites[site].backend == "paddle_fused"
    assert sites["final_norm"].residual == "fused"


def test_fastdeploy_backends_listed_unavailable():
    names = {backend.name for backend in list_backends(include_all=True)}

    assert {"fastdeploy_default", "fastdeploy_proxy"} <= names
    for name in ("fastdeploy_default", "fastdeploy_proxy"):
        availability = get_backend(name).probe("float32", "cpu")
        assert not availability.available
        assert NORMALIZATION_MODULE in availability.reason


def test_fastdeploy_mode_reported_unavailable():
    stack, rows = _run_tiny("fastdeploy_proxy")

    mode_run = stack.modes["fastdeploy_proxy"]
    assert not mode_run.availability.available
    assert NORMALIZATION_MODULE in mode_run.availability.reason
    assert rows == []
