"""Case spec validation, canonical JSON and case ids."""

import json

import pytest

from precision_suite.errors import SpecError
from precision_suite.spec import CaseSpec

VALID = dict(op="rms_norm", shape=(4, 769), dtype="bfloat16", eps=1e-6, x_dist="outlier_channels",
             w_dist="near_one", residual=True, seed=12345, x_scale=10.0)


def make(**changes):
    return CaseSpec(**{**VALID, **changes})


def test_json_round_trip():
    spec = make()
    assert CaseSpec.from_json(spec.to_json()) == spec


def test_canonical_json_sorted_and_compact():
    text = make().to_json()
    assert " " not in text
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_case_id_pinned():
    # Pinned: a change here renames every case in every saved table and corpus file.
    assert make().case_id == CaseSpec.from_json(make().to_json()).case_id
    assert make().case_id == "47d7443b3e71"


def test_case_id_changes_with_any_field():
    base = make().case_id
    assert make(seed=12346).case_id != base
    assert make(eps=1e-5).case_id != base
    assert make(shape=(4, 768)).case_id != base


def test_list_shape_normalized_to_tuple():
    assert make(shape=[2, 3, 8]).shape == (2, 3, 8)


def test_integer_eps_and_scale_become_float():
    spec = make(eps=1, x_scale=100)
    assert isinstance(spec.eps, float) and isinstance(spec.x_scale, float)


INVALID = [
    ("op", "layer_norm", "op: invalid value 'layer_norm'; expected one of rms_norm"),
    ("shape", (8,), "shape: invalid value (8,); expected a list of 2 or 3 dimensions"),
    ("shape", (1, 2, 3, 4), "shape: invalid value (1, 2, 3, 4); expected a list of 2 or 3 dimensions"),
    ("shape", (0, 8), "shape: invalid value (0, 8); expected whole numbers >= 1"),
    ("shape", (-2, 8), "shape: invalid value (-2, 8); expected whole numbers >= 1"),
    ("shape", (2, 8.0), "shape: invalid value (2, 8.0); expected whole numbers >= 1"),
    ("dtype", "float8", "dtype: invalid value 'float8'; expected one of float16, bfloat16, float32, float64"),
    ("eps", -1e-5, "eps: invalid value -1e-05; expected a finite number > 0"),
    ("eps", 0.0, "eps: invalid value 0.0; expected a finite number > 0"),
    ("eps", float("nan"), "eps: invalid value nan; expected a finite number > 0"),
    ("eps", float("inf"), "eps: invalid value inf; expected a finite number > 0"),
    ("eps", "1e-5", "eps: invalid value '1e-5'; expected a finite number > 0"),
    ("x_dist", "cauchy", "x_dist: invalid value 'cauchy'; expected one of normal, uniform"),
    ("w_dist", "zeros", "w_dist: invalid value 'zeros'; expected one of ones, near_one"),
    ("residual", "yes", "residual: invalid value 'yes'; expected true or false"),
    ("seed", -1, "seed: invalid value -1; expected a whole number in [0, 2**64)"),
    ("seed", 2**64, "seed: invalid value 18446744073709551616; expected a whole number in [0, 2**64)"),
    ("seed", True, "seed: invalid value True; expected a whole number in [0, 2**64)"),
    ("x_scale", 0.0, "x_scale: invalid value 0.0; expected a finite number > 0"),
]


@pytest.mark.parametrize(("field", "value", "message"), INVALID,
                         ids=[f"{field}={value!r}" for field, value, _ in INVALID])
def test_invalid_field_message(field, value, message):
    with pytest.raises(SpecError) as raised:
        make(**{field: value})
    assert str(raised.value).startswith(message)


def test_from_dict_missing_field():
    data = make().to_dict()
    del data["eps"]
    with pytest.raises(SpecError, match=r"^eps: missing field; a spec needs op, shape, dtype, eps"):
        CaseSpec.from_dict(data)


def test_from_dict_unknown_field():
    with pytest.raises(SpecError, match=r"^colour: unknown field; allowed fields are"):
        CaseSpec.from_dict({**make().to_dict(), "colour": "red"})


def test_from_dict_x_scale_optional():
    data = make().to_dict()
    del data["x_scale"]
    assert CaseSpec.from_dict(data).x_scale == 1.0


def test_from_json_rejects_non_json():
    with pytest.raises(SpecError, match=r"^spec: invalid JSON"):
        CaseSpec.from_json("cos\nsystem\n(S'echo hi'\ntR.")


def test_from_json_rejects_non_object():
    with pytest.raises(SpecError, match=r"^spec: invalid value \[1, 2\]"):
        CaseSpec.from_json("[1, 2]")


def test_replace_validates():
    with pytest.raises(SpecError, match="^eps"):
        make().replace(eps=-1.0)
