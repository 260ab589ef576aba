"""Config loading: every rejection names its field in one line; overrides and paths work."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pydantic
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import DEFAULT_CACHE_ROOT, BackboneSpec, EngineInitConfig
from app.errors import ConfigError
from app.loading import load_config
from app.values import InputProfile, PrecisionMode


def write(tmp_path: Path, doc: object, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


@pytest.fixture
def base(tmp_path, corpus):
    return {
        "cache_root": "cache", "readiness_marker": "run/ready.json", "backend": "onnxruntime",
        "precision": "fp32", "calibration_path": str(corpus["calibration"]),
        "backbones": [
            {"model_name": "dinov2_vpr", "onnx_path": str(corpus["dinov2_vpr"]),
             "expected_input_shape": [1, 3, 32, 32]},
            {"model_name": "lightglue", "onnx_path": str(corpus["lightglue"]),
             "input_shapes": {"desc0": {"min": [1, 1, 64], "opt": [1, 8, 64], "max": [1, 64, 64]},
                              "desc1": [1, 8, 64]}},
        ],
    }


def test_valid_config_resolves_paths_against_its_folder(tmp_path, base):
    config = load_config(write(tmp_path, base), env={})
    assert config.cache_root == tmp_path / "cache"
    assert config.readiness_marker == tmp_path / "run" / "ready.json"
    spec = BackboneSpec.from_config(config.backbones[1])
    assert spec.input_shapes["desc0"] == InputProfile((1, 1, 64), (1, 8, 64), (1, 64, 64))
    assert spec.input_shapes["desc1"].is_fixed
    assert config.precision is PrecisionMode.FP32


def test_shipped_configs_are_valid(tmp_path):
    root = Path(__file__).resolve().parents[1] / "config"
    for name in ("engine-init.yaml", "demo.yaml"):
        config = load_config(root / name, env={}, check_files=False)
        assert config.backbones


def test_config_path_precedence(tmp_path, base, monkeypatch):
    explicit = write(tmp_path, base, "explicit.yaml")
    other = dict(base, workspace_mb=77)
    from_env = write(tmp_path, other, "env.yaml")
    assert load_config(explicit, env={"ENGINE_INIT_CONFIG": str(from_env)}).workspace_mb == 4096
    assert load_config(None, env={"ENGINE_INIT_CONFIG": str(from_env)}).workspace_mb == 77
    with pytest.raises(ConfigError, match=r"/etc/engine-init/config\.yaml"):
        load_config(None, env={})


def test_env_overrides_top_level_keys(tmp_path, base):
    config = load_config(write(tmp_path, base), env={
        "ENGINE_INIT_WORKSPACE_MB": "2048", "ENGINE_INIT_PRECISION": "fp16",
        "ENGINE_INIT_LOG_FORMAT": "json", "ENGINE_INIT_CACHE_ROOT": "/var/tmp/c"})
    assert config.workspace_mb == 2048 and config.precision is PrecisionMode.FP16
    assert config.cache_root == Path("/var/tmp/c")


REJECTIONS = [
    # (mutation, words that must be in the message)
    (lambda d: d.update(workspace_mb=0), ["workspace_mb"]),
    (lambda d: d.update(workspace_mb=-5), ["workspace_mb"]),
    (lambda d: d.update(workspace_mb="lots"), ["workspace_mb"]),
    (lambda d: d.update(colour="red"), ["colour", "unknown key"]),
    (lambda d: d["backbones"][0].update(extra=1), ["backbones[0].extra", "unknown key"]),
    (lambda d: d.update(precision="bf16"), ["precision"]),
    (lambda d: d.update(backend="cuda"), ["backend"]),
    (lambda d: d.update(optimization_level=9), ["optimization_level"]),
    (lambda d: d.update(backbones=[]), ["backbones"]),
    (lambda d: d["backbones"][0].update(expected_input_shape=[1, 0, 32, 32]), ["expected_input_shape"]),
    (lambda d: d["backbones"][0].update(expected_input_shape=[1, -3, 32, 32]), ["expected_input_shape"]),
    (lambda d: d["backbones"][0].update(expected_input_shape=[]), ["expected_input_shape"]),
    (lambda d: d["backbones"][0].update(onnx_path="/nonexistent/m.onnx"), ["onnx_path", "does not exist"]),
    (lambda d: d["backbones"][0].update(onnx_path="/"), ["onnx_path", "not a file"]),
    (lambda d: d["backbones"][1].update(model_name="dinov2_vpr"), ["duplicate", "dinov2_vpr"]),
    (lambda d: d["backbones"][0].update(model_name="../x"), ["model_name"]),
    (lambda d: d["backbones"][0].update(model_name="a__b"), ["model_name", "__"]),
    (lambda d: d["backbones"][0].update(model_name=".hidden"), ["model_name", "dot"]),
    (lambda d: d["backbones"][0].update(model_name="a\0b"), ["model_name"]),
    (lambda d: d["backbones"][0].update(model_name="m" * 300), ["model_name", "300"]),
    (lambda d: d["backbones"][1]["input_shapes"].update(
        desc0={"min": [1, 9, 64], "opt": [1, 8, 64], "max": [1, 64, 64]}), ["min <= opt <= max"]),
    (lambda d: d["backbones"][1]["input_shapes"].update(
        desc0={"min": [1, 9], "opt": [1, 8, 64], "max": [1, 64, 64]}), ["same number"]),
    (lambda d: d["backbones"][0].update(input_shapes={"pixels": [1, 3, 32, 32]}), ["not both"]),
    (lambda d: d.update(precision="int8", calibration_path=None), ["int8", "calibration"]),
    (lambda d: d["backbones"][0].update(dla_core=-1), ["dla_core"]),
    (lambda d: d.update(lock_timeout_s=0), ["lock_timeout_s"]),
    (lambda d: d.update(jetpack="six"), ["jetpack"]),
    (lambda d: d["backbones"][0].update(verify="always"), ["verify"]),
    (lambda d: d.update(cache_root="ca\0che"), ["cache_root", "NUL"]),
    (lambda d: d.update(readiness_marker=["a"]), ["readiness_marker", "string"]),
    (lambda d: d["backbones"][1]["input_shapes"].update(desc1="8x64"),
     ["input_shapes.desc1", "list of dimensions or a mapping of min, opt and max"]),
    (lambda d: d["backbones"][1]["input_shapes"].update(desc1=[1, 0, 64]), ["input_shapes.desc1.dims[1]"]),
    (lambda d: d["backbones"].append(7), ["backbones[2]", "dictionary"]),
]


@pytest.mark.parametrize(("mutate", "words"), REJECTIONS)
def test_rejections_name_the_field_in_one_line(tmp_path, base, mutate, words):
    mutate(base)
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, base), env={})
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert caught.value.hint


@pytest.mark.parametrize(("text", "words"), [
    ("a: [1, 2\n", ["YAML syntax error", "line"]),
    ("", ["empty"]),
    ("# only a comment\n", ["empty"]),
    ("- a\n- b\n", ["mapping"]),
    ("cache_root: a\ncache_root: b\n", ["duplicate key"]),
    ("\tcache_root: x\n", ["YAML"]),
])
def test_bad_yaml(tmp_path, text, words):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env={})
    for word in words:
        assert word in str(caught.value)


def test_config_path_is_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="directory"):
        load_config(tmp_path, env={})


@pytest.mark.parametrize(("env", "said", "hinted"), [
    ({"ENGINE_INIT_DEBUG": "1"}, "ENGINE_INIT_DEBUG: no config key 'debug'", "pass --debug"),
    ({"ENGINE_INIT_CACHE_ROT": "/x"}, "(did you mean ENGINE_INIT_CACHE_ROOT?)", "valid keys: "),
    ({"ENGINE_INIT_CONFG": "c.yaml"}, "(did you mean ENGINE_INIT_CONFIG?)", "valid keys: "),
])
def test_an_unknown_variable_says_what_was_meant(tmp_path, base, env, said, hinted):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, base), env=env)
    assert said in str(caught.value)
    assert caught.value.hint.startswith(hinted), caught.value.hint


@pytest.mark.parametrize(("env", "words"), [
    ({"ENGINE_INIT_WORKSPACE_MB": "-1"}, ["workspace_mb", "ENGINE_INIT_WORKSPACE_MB"]),
    ({"ENGINE_INIT_PRECSION": "fp16"}, ["ENGINE_INIT_PRECSION", "no config key"]),
    ({"ENGINE_INIT_BACKBONES": "[unclosed"}, ["ENGINE_INIT_BACKBONES", "YAML"]),
    # Nothing reads such a variable (--debug is the option): an error, never silently ignored.
    ({"ENGINE_INIT_DEBUG": "1"}, ["ENGINE_INIT_DEBUG", "no config key"]),
])
def test_bad_env_overrides_name_the_variable(tmp_path, base, env, words):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, base), env=env)
    for word in words:
        assert word in str(caught.value)


def test_int8_is_accepted_with_calibration_data_or_a_cache(tmp_path, base):
    base["precision"] = "int8"
    assert load_config(write(tmp_path, base), env={}).precision is PrecisionMode.INT8
    base["calibration_path"] = None
    (tmp_path / "cache" / "calibration").mkdir(parents=True)
    for model in ("dinov2_vpr", "lightglue"):
        (tmp_path / "cache" / "calibration" / f"{model}__trt10.3__abc.calib").write_bytes(b"c")
    assert load_config(write(tmp_path, base), env={}).precision is PrecisionMode.INT8


def test_schema_is_json_schema():
    schema = EngineInitConfig.model_json_schema()
    assert "backbones" in schema["required"] and schema["additionalProperties"] is False
    assert schema["properties"]["workspace_mb"] == {
        "default": 4096, "exclusiveMinimum": 0, "maximum": 1 << 20, "title": "Workspace Mb",
        "type": "integer", "description": "TensorRT builder workspace, in MiB, 1..1048576."}
    assert set(schema["properties"]) == set(EngineInitConfig.model_fields)
    json.dumps(schema)


def test_the_schema_documents_every_key():
    schema = EngineInitConfig.model_json_schema()
    models = {"EngineInitConfig": schema, **schema["$defs"]}
    assert {"BackboneConfig", "ProfileConfig"} <= set(models)
    for name, model in models.items():
        for key, prop in model.get("properties", {}).items():
            assert len(prop.get("description", "")) > 10, f"{name}.{key} has no description"
    assert schema["properties"]["cache_root"]["format"] == "path"


def test_defaults_fill_what_the_file_leaves_out(tmp_path, corpus):
    doc = {"backbones": [{"model_name": "m", "onnx_path": str(corpus["dinov2_vpr"])}]}
    config = load_config(write(tmp_path, doc), env={})
    assert config.cache_root == DEFAULT_CACHE_ROOT == Path("/var/cache/engine-init")
    assert config.precision is PrecisionMode.FP16 and config.verify == "io"
    assert config.backbones[0].verify is None  # the top-level verify applies
    assert BackboneSpec.from_config(config.backbones[0], config.verify, config.accuracy).verify == "io"
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.workspace_mb = 1  # type: ignore[misc]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20))
def test_arbitrary_yaml_only_ever_raises_config_error(tmp_path, doc):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    with contextlib.suppress(ConfigError):
        load_config(path, env={})


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_ever_raise_config_error(tmp_path, raw):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(raw)
    with contextlib.suppress(ConfigError):
        load_config(path, env={})


@pytest.mark.parametrize(("accuracy", "match"), [
    ({"metric": "rel_l2"}, "give metric and threshold together"),
    ({"metric": "psnr", "threshold": 1}, "accuracy.metric"),
    ({"value_range": [1, 0]}, "low < high"),
    ({"random_samples": 0}, "accuracy.random_samples"),
    ({"sample_path": "x"}, "sample_path"),
    ({"outputs": {"kp": {"compare": "sets"}}}, "accuracy.outputs.kp.compare"),
    ({"outputs": {"kp": {"compare": "skip"}}}, "compare: skip needs a reason"),
    ({"outputs": {"kp": {"compare": "argmax", "aligned_to": "x"}}}, "aligned_to compares rows"),
    ({"outputs": {"kp": {"radius": 1.0}}}, "radius applies to compare: points"),
    ({"outputs": {"kp": {"compare": "points", "radius": -1}}}, "accuracy.outputs.kp.radius"),
    ({"outputs": {"kp": {"metric": "matched"}}}, "give metric and threshold together"),
])
def test_bad_accuracy_settings_say_what_is_wrong(tmp_path, corpus, accuracy, match):
    from app.errors import ConfigError

    doc = {"verify": "accuracy", "accuracy": accuracy,
           "backbones": [{"model_name": "m", "onnx_path": str(corpus["dinov2_vpr"])}]}
    with pytest.raises(ConfigError, match=match) as caught:
        load_config(write(tmp_path, doc), env={})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("mutate", "said"), [
    (lambda d: d.update(precison="fp16"), "precison: unknown key (did you mean 'precision'?)"),
    (lambda d: d["backbones"][0].update(expected_input_shap=[1]),
     "backbones[0].expected_input_shap (model dinov2_vpr): unknown key (did you mean "
     "'expected_input_shape'?)"),
    (lambda d: d.update(governor={"enabeld": False}),
     "governor.enabeld: unknown key (did you mean 'enabled'?)"),
    (lambda d: d.update(colour="red"), "colour: unknown key (valid keys here: accuracy, "),
    (lambda d: d["backbones"][1]["input_shapes"]["desc0"].update(mn=[1]), "unknown key"),
])
def test_an_unknown_key_suggests_the_key_meant(tmp_path, base, mutate, said):
    mutate(base)
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, base), env={})
    assert said in str(caught.value)


def test_a_missing_relative_path_says_where_it_was_looked_for(tmp_path, base):
    base["backbones"][0]["onnx_path"] = "models/dinov2_vpr.onnx"
    (tmp_path / "conf").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path / "conf", base), env={})
    assert (f"{tmp_path}/conf/models/dinov2_vpr.onnx does not exist (relative paths resolve against "
            f"the config file's folder, {tmp_path}/conf)") in str(caught.value)
    base["backbones"][0]["onnx_path"] = "/nonexistent/m.onnx"  # absolute: nothing to explain
    with pytest.raises(ConfigError, match=r"m\.onnx does not exist$"):
        load_config(write(tmp_path, base), env={})


def test_a_missing_file_hints_at_the_path_and_a_list_item_is_named_by_its_model(tmp_path, base):
    base["backbones"][0]["onnx_path"] = "models/nothere.onnx"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, base), env={})
    assert "backbones[0].onnx_path (model dinov2_vpr): " in str(caught.value)
    assert caught.value.hint == "correct the path in the config, or put the file there"
    del base["backbones"][1]["onnx_path"]
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, base), env={})
    assert "backbones[1].onnx_path (model lightglue): Field required" in str(caught.value)
    assert "engine-init schema" in caught.value.hint  # not only a path to fix any more
    base["backbones"][1] = {"onnx_path": "x.onnx"}  # no model_name: the index alone
    with pytest.raises(ConfigError, match=r"backbones\[1\]\.model_name: Field required"):
        load_config(write(tmp_path, base), env={})


def test_the_valid_keys_of_a_place_are_listed_once(tmp_path, base):
    base.update(colour="red", flavour="mild")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, base), env={})
    message = str(caught.value)
    assert message.count("valid keys here") == 1
    assert ("colour: unknown key (valid" in message) != ("flavour: unknown key (valid" in message)


def test_per_output_comparisons_reach_the_gate_model_entries_over_job_ones(tmp_path, corpus):
    from app.config_sections import AccuracyOutputConfig as Rule

    doc = {"verify": "accuracy",
           "accuracy": {"outputs": {"scores": {"compare": "argmax", "axis": 2},
                                    "descriptor": {"metric": "variation", "threshold": 0.2}}},
           "backbones": [{"model_name": "lg", "onnx_path": str(corpus["lightglue"])},
                         {"model_name": "kp", "onnx_path": str(corpus["aliked"]),
                          "accuracy": {"outputs": {"scores": {
                              "compare": "skip", "reason": "a heat map nobody reads"}}}}]}
    config = load_config(write(tmp_path, doc), env={})
    lg, kp = (BackboneSpec.from_config(b, config.verify, config.accuracy).accuracy
              for b in config.backbones)
    assert lg is not None and kp is not None
    assert lg.outputs["scores"] == Rule(compare="argmax", axis=2)
    assert kp.outputs["scores"] == Rule(compare="skip", reason="a heat map nobody reads")
    assert lg.shared_outputs == {"scores", "descriptor"} and kp.shared_outputs == {"descriptor"}
    assert kp.seed == lg.seed == 0 and kp.outputs["descriptor"].comparison == "values"
    aligned = Rule(aligned_to="keypoints")
    assert (aligned.comparison, aligned.aligned_to) == ("aligned", "keypoints")
    # What a recorded pass keeps of each rule (records written before stay comparable).
    assert aligned.key() == {"compare": "aligned", "radius": None, "aligned_to": "keypoints",
                             "axis": -1, "metric": None, "threshold": None}


def test_the_sections_are_the_settings_the_code_takes_in_python_too(tmp_path, corpus):
    """Built in Python, a section takes a Path where the config takes a string, and checks its
    keys as the config does; the compiler's request carries the section itself."""
    from app.config import EngineCompileRequest
    from app.config_sections import AccuracyConfig, GovernorConfig
    from tests.helpers import ORIN

    doc = {"backbones": [{"model_name": "m", "onnx_path": str(corpus["dinov2_vpr"])}]}
    config = load_config(write(tmp_path, doc), env={})
    assert EngineCompileRequest.from_config(config, ORIN).governor is config.governor
    off = load_config(write(tmp_path, {**doc, "governor": {"enabled": False}}), env={})
    assert EngineCompileRequest.from_config(off, ORIN).governor is None

    assert GovernorConfig(root=tmp_path).root == tmp_path
    assert AccuracyConfig(samples_path=tmp_path / "samples").samples_path == tmp_path / "samples"
    with pytest.raises(pydantic.ValidationError, match="give metric and threshold together"):
        AccuracyConfig(metric="cosine")
    with pytest.raises(pydantic.ValidationError, match="valid string"):
        GovernorConfig(root=3)
