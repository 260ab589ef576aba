"""Names under the cache root (one home, whose docstring is the tree) and file name schemas:
exact format, round trips, and strict parsing (with hypothesis)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import EngineFilenameSchema, OrtFilenameSchema, PrecisionMode
from app.cache import hashing, lock, names, signing
from app.cache.names import check_model_name

MODEL = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,40}", fullmatch=True).filter(
    lambda s: "__" not in s)
VERSION = st.builds(lambda a, b: f"{a}.{b}", st.integers(0, 99), st.integers(0, 99))
JETPACK = st.one_of(VERSION, st.just("none"),
                    st.builds(lambda v, c: f"l4t{v}.{c}", VERSION, st.integers(0, 9)))


def test_the_documented_name():
    name = EngineFilenameSchema.build(model_name="dinov2_vpr", sm=87, jetpack="6.2", trt="10.3",
                                      precision=PrecisionMode.FP16)
    assert name == "dinov2_vpr__sm87_jp6.2_trt10.3_fp16.engine"
    parsed = EngineFilenameSchema.parse(name)
    assert (parsed.model_name, parsed.sm, parsed.jetpack, parsed.trt, parsed.precision) == (
        "dinov2_vpr", 87, "6.2", "10.3", PrecisionMode.FP16)
    assert isinstance(parsed.sm, int)


def test_non_jetpack_hosts_use_the_none_token():
    assert EngineFilenameSchema.build(model_name="m", sm=90, jetpack="none", trt="10.3",
                                      precision="fp32") == "m__sm90_jpnone_trt10.3_fp32.engine"


@given(MODEL, st.integers(1, 200), JETPACK, VERSION, st.sampled_from(list(PrecisionMode)))
def test_engine_names_round_trip(model, sm, jetpack, trt, precision):
    name = EngineFilenameSchema.build(model_name=model, sm=sm, jetpack=jetpack, trt=trt,
                                      precision=precision)
    parsed = EngineFilenameSchema.parse(name)
    assert (parsed.model_name, parsed.sm, parsed.jetpack, parsed.trt, parsed.precision) == (
        model, sm, jetpack, trt, precision)


@given(MODEL, VERSION, st.from_regex(r"[a-z0-9_]{1,8}-[0-9a-f]{8}", fullmatch=True),
       st.sampled_from(list(PrecisionMode)))
def test_ort_names_round_trip(model, ort, cpu, precision):
    name = OrtFilenameSchema.build(model_name=model, ort=ort, cpu=cpu, precision=precision)
    parsed = OrtFilenameSchema.parse(name)
    assert (parsed.model_name, parsed.ort, parsed.cpu, parsed.precision) == (model, ort, cpu, precision)


@given(st.text(max_size=120))
def test_parse_raises_only_value_error_on_any_text(text):
    for schema in (EngineFilenameSchema, OrtFilenameSchema):
        with contextlib.suppress(ValueError):
            schema.parse(text)


@pytest.mark.parametrize("name", [
    "dinov2_vpr__sm87_jp6.2_trt10.3_fp16.engine.sha256",
    "dinov2_vpr__sm087_jp6.2_trt10.3_fp16.engine",   # build never zero-pads
    "dinov2_vpr__sm0_jp6.2_trt10.3_fp16.engine",
    "dinov2_vpr__sm87_jp6.2_trt10.3.0_fp16.engine",  # trt is major.minor
    "dinov2_vpr__sm87_jp6.2_trt10.3_bf16.engine",
    "a__b__sm87_jp6.2_trt10.3_fp16.engine",          # '__' inside the model name
    ".hidden__sm87_jp6.2_trt10.3_fp16.engine",
    "__sm87_jp6.2_trt10.3_fp16.engine",
    "x__sm87_jpunknown_trt10.3_fp16.engine",
    "x__sm87_jp6.2_trt10.3_FP16.engine",
    "x__sm87_jp6.2_trt10.3_fp16.ENGINE",
    "../x__sm87_jp6.2_trt10.3_fp16.engine",
    "x__sm87_jp6.2_trt10.3_fp16.engine\n",
])
def test_parse_rejects_what_build_cannot_produce(name):
    with pytest.raises(ValueError):
        EngineFilenameSchema.parse(name)


@pytest.mark.parametrize("bad", ["", "../x", "a__b", ".hidden", "a\0b", "x" * 300, "a/b", "a b",
                                 "ü"])
def test_unsafe_model_names_are_refused(bad):
    with pytest.raises(ValueError):
        check_model_name(bad)
    with pytest.raises(ValueError):
        EngineFilenameSchema.build(model_name=bad, sm=87, jetpack="6.2", trt="10.3", precision="fp16")


@pytest.mark.parametrize("kwargs", [dict(sm=0), dict(sm=-1), dict(sm=True), dict(jetpack="6"),
                                    dict(trt="10"), dict(trt="10.3.0"), dict(precision="bf16")])
def test_build_refuses_bad_parts(kwargs):
    args = dict(model_name="m", sm=87, jetpack="6.2", trt="10.3", precision="fp16") | kwargs
    with pytest.raises(ValueError):
        EngineFilenameSchema.build(**args)


def test_every_name_is_drawn_in_the_tree():
    named = {value for key, value in vars(names).items()
             if key.isupper() and not key.startswith("_") and isinstance(value, str)}
    assert named >= {".engine-init.lock", ".engine-init.warm.json", "tuf", "candidates"}
    for name in named:
        assert name in names.__doc__, f"{name} is missing from app.cache.names' tree"


def test_the_modules_use_the_names_of_the_tree():
    assert (lock.LOCK_NAME, hashing.HINT_NAME, signing.ROBOT_KEY_NAME) == \
        (names.LOCK_NAME, names.HINT_NAME, names.ROBOT_KEY_NAME)
    assert names.COMPANION_SUFFIXES == (names.SIDECAR_SUFFIX, names.RECORD_SUFFIX)

