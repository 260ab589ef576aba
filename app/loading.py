"""Load :class:`app.config.EngineInitConfig` from the file and ``ENGINE_INIT_<KEY>`` variables
(docs/configuration.md), within docs/hardening.md#config-input's bounds, with one-line errors."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import ValidationError

from app.cache.fsread import UnsafeFileError, read_small
from app.config import EngineInitConfig
from app.config_sections import MISSING_FILE
from app.errors import ConfigError
from app.values import CONFIG_ENV, ENV_PREFIX, RESERVED_ENV
from app.yamlread import load_bounded

DEFAULT_CONFIG_PATH = Path("/etc/engine-init/config.yaml")
#: ENGINE_INIT_* variables that are not config keys.
_CONFIG_MAX_BYTES = 1 << 20
_ENV_MAX_BYTES = 64 << 10
_ERRORS_SHOWN = 5
_PART_MAX = 300
_HINT = "fix the file, or point --config / ENGINE_INIT_CONFIG at the right one"


def config_path(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    if explicit:
        return Path(explicit)
    from_env = env.get(CONFIG_ENV)
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def _parse_yaml(path: Path) -> object:
    """The file's YAML document (None when empty), else ConfigError."""
    try:
        # The safe reader: a FIFO or a device named as the config must not hang the boot.
        raw = read_small(path, _CONFIG_MAX_BYTES, follow_links=True)
        return load_bounded(raw.decode("utf-8"))
    except UnsafeFileError as exc:
        line = (f"config {path} is larger than 1 MiB" if exc.errno == errno.EFBIG else
                f"config {path} is a directory, not a file" if os.path.isdir(path) else
                f"cannot read config {path}: {exc.strerror}")
    except OSError as exc:
        line = f"cannot read config {path}: {exc.strerror}"
    except UnicodeDecodeError:
        line = f"config {path} is not UTF-8 text"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        # A document that parses but is refused (too large once expanded...) is no syntax error.
        what = "refused" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
        line = f"config {path}: {what}{where}: {_problem(exc)}"
    raise ConfigError(line, hint=_HINT)


def _problem(exc: yaml.YAMLError) -> str:
    # The problem, never the value: it may be huge (and its expansion larger still).
    return getattr(exc, "problem", None) or str(exc).splitlines()[0]


def _env_value(var: str, text: str) -> Any:
    if len(text) > _ENV_MAX_BYTES:
        raise ConfigError(f"{var}: value of {len(text)} characters, more than "
                          f"{_ENV_MAX_BYTES}", hint="set the key in the config file instead")
    try:
        return load_bounded(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{var}: not a valid YAML value: {_problem(exc)}",
                          hint="quote strings; use [a, b] for lists") from None


def _env_overrides(env: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    fields = EngineInitConfig.model_fields
    out: dict[str, tuple[str, Any]] = {}
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX) or var in RESERVED_ENV:
            continue
        key = var[len(ENV_PREFIX):].lower()
        if key == "debug":  # an option, not a key: the variable a user guesses for --debug
            raise ConfigError(f"{var}: no config key {key!r}",
                              hint="pass --debug for debug events and tracebacks, and unset "
                                   f"{var}")
        if key not in fields:
            names = [*(ENV_PREFIX + name.upper() for name in fields), *RESERVED_ENV]
            meant = _close_match(var, names)
            raise ConfigError(f"{var}: no config key {key!r}"
                              + (f" (did you mean {meant}?)" if meant else ""),
                              hint=f"valid keys: {', '.join(sorted(fields))}")
        out[key] = (var, _env_value(var, text))
    return out


def _format(exc: ValidationError, from_env: dict[str, str], doc: object) -> tuple[str, str]:
    """The first validation errors as one line, each clipped (40,000 bad values or a 60 KiB key
    must not make a 2 MB line), and the hint that fits them."""
    parts = []
    listed: set[str] = set()  # the places whose valid keys were given (once each)
    errors = exc.errors(include_url=False)
    for err in errors[:_ERRORS_SHOWN]:
        loc = ""
        node, model = doc, None  # the user's value at loc; the model_name of a list item on it
        for item in err["loc"]:
            loc += f"[{item}]" if isinstance(item, int) else (f".{item}" if loc else str(item))
            node = _child(node, item)
            if isinstance(item, int) and isinstance(node, dict) and \
                    isinstance(node.get("model_name"), str):
                model = node["model_name"]
        if model is not None:
            loc += f" (model {_clip(model, 60)})"
        top = str(err["loc"][0]) if err["loc"] else ""
        if top in from_env:
            loc = f"{loc} (from {from_env[top]})"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _suggestion(err["loc"], listed)
        elif err["type"] == "model_type":  # not "... or instance of BackboneConfig": YAML has none
            msg = "Input should be a valid dictionary"
        part = f"{loc or 'config'}: {msg}"
        parts.append(_clip(part, _PART_MAX))
    if len(errors) > _ERRORS_SHOWN:
        parts.append(f"and {len(errors) - _ERRORS_SHOWN} more")
    return "; ".join(parts), ("correct the path in the config, or put the file there"
                              if all(err["type"] == MISSING_FILE for err in errors)
                              else "run `engine-init schema` for every key and its type")


def _child(node: object, item: int | str) -> object:
    if isinstance(node, dict):
        return node.get(item)
    if isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
        return node[item]
    return None


def _clip(text: str, most: int) -> str:
    return text if len(text) <= most else text[:most] + "..."


def _suggestion(loc: tuple[int | str, ...], listed: set[str]) -> str:
    """For an unknown key: the key meant (``precison``), else the valid ones (once a message)."""
    from pydantic import BaseModel

    model: Any = EngineInitConfig
    for item in loc[:-1]:  # down to the model holding the key; list indexes stay on the model
        if isinstance(item, int):
            continue
        field = model.model_fields.get(item)
        model = next((t for t in _types_in(field.annotation) if issubclass(t, BaseModel)), None) \
            if field is not None else None
        if model is None:
            return ""  # inside a mapping of the user's names (input_shapes): nothing to offer
    keys = sorted(model.model_fields)
    meant = _close_match(str(loc[-1]), keys)
    if meant:
        return f" (did you mean {meant!r}?)"
    if model.__name__ in listed:
        return ""
    listed.add(model.__name__)
    return f" (valid keys here: {', '.join(keys)})"


def _close_match(name: str, known: list[str]) -> str | None:
    import difflib

    meant = difflib.get_close_matches(name, known, n=1)
    return meant[0] if meant else None


def _types_in(annotation: Any) -> list[type]:
    """The classes an annotation names, through Optional, list[...] and Annotated."""
    import typing

    if isinstance(annotation, type) and not typing.get_args(annotation):
        return [annotation]
    return [t for arg in typing.get_args(annotation) for t in _types_in(arg)]


def load_config(
    explicit: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    check_files: bool = True,
) -> EngineInitConfig:
    env = os.environ if env is None else env
    path = config_path(explicit, env)
    doc = _parse_yaml(path)
    if doc is None:
        raise ConfigError(f"config {path} is empty", hint="see config/engine-init.yaml for a start")
    if not isinstance(doc, dict):
        raise ConfigError(f"config {path}: the top level must be a mapping of keys, "
                          f"not {type(doc).__name__}", hint=_HINT)
    overrides = _env_overrides(env)
    for key, (_, value) in overrides.items():
        doc[key] = value
    context = {"base_dir": path.resolve().parent, "check_files": check_files}
    try:
        return EngineInitConfig.model_validate(doc, context=context)
    except ValidationError as exc:
        from_env = {key: var for key, (var, _) in overrides.items()}
        line, hint = _format(exc, from_env, doc)
        raise ConfigError(f"config {path}: {line}", hint=hint) from None


def path_of_failed_config(
    key: str, explicit: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Path | None:
    """After :func:`load_config` failed: the path the config names for ``key`` (the marker to
    remove, the metrics textfile), never a guess: the YAML must parse, and the value (variable,
    else top-level key, else default) must be valid for that key; else None."""
    env = os.environ if env is None else env
    path = config_path(explicit, env)
    field = EngineInitConfig.model_fields[key]
    var = ENV_PREFIX + key.upper()
    try:
        doc = _parse_yaml(path)
        value = _env_value(var, env[var]) if var in env else (
            doc.get(key, field.default) if isinstance(doc, dict) else field.default)
    except ConfigError:
        return None
    if value is None:
        return None
    from pydantic import TypeAdapter

    # The field's type with its constraints (pydantic keeps them apart from the annotation).
    kind: Any = (Annotated.__class_getitem__((field.annotation, *field.metadata))  # type: ignore[attr-defined]
                 if field.metadata else field.annotation)
    try:
        found = TypeAdapter(kind).validate_python(value, context={"base_dir": path.resolve().parent})
    except ValidationError:
        return None
    return found if isinstance(found, Path) else None
