"""Load :class:`app.config.EngineInitConfig` from YAML and the environment, with one-line errors.

This module loads without the validator (:mod:`app.config`, pydantic-core), so that a path
the config names can be read early, by :func:`path_hint`, while the rest of the program loads.

Where it comes from: ``--config``, else ``$ENGINE_INIT_CONFIG``, else
``/etc/engine-init/config.yaml``. ``ENGINE_INIT_<KEY>`` overrides the top-level ``<key>``; the
value is parsed as YAML, so ``ENGINE_INIT_WORKSPACE_MB=2048`` is a number. An unknown
``ENGINE_INIT_*`` variable is an error (a typo must not be silently ignored).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import DEFAULT_CACHE_ROOT, DEFAULT_MARKER
from app.errors import ConfigError

if TYPE_CHECKING:
    from pydantic_core import ValidationError

    from app.config import EngineInitConfig

__all__ = ["DEFAULT_CONFIG_PATH", "ENV_PREFIX", "config_path", "load_config", "load_modules",
           "path_hint"]

DEFAULT_CONFIG_PATH = Path("/etc/engine-init/config.yaml")

ENV_PREFIX = "ENGINE_INIT_"
#: ENGINE_INIT_* variables that are not config keys.
RESERVED_ENV = frozenset({"CONFIG", "LOG_FORMAT", "FAULTS", "DEBUG"})
_CONFIG_MAX_BYTES = 1 << 20


@functools.cache
def _loader() -> Any:
    """PyYAML's safe loader that refuses duplicate mapping keys instead of keeping the last;
    built on first use, because importing PyYAML (~12 ms) need not delay a warm boot's early
    hashing (which finds ``cache_root`` without it)."""
    import yaml

    # libyaml's parser when PyYAML has it (about 10x faster than the pure-Python one).
    base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class UniqueKeyLoader(base):  # type: ignore[valid-type,misc]
        pass

    def mapping(loader: UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return dict(loader.construct_mapping(node))

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return UniqueKeyLoader


def load_modules() -> None:
    """Load what :func:`load_config` uses (PyYAML, the validator) now rather than on its call."""
    import app.config  # noqa: F401

    _loader()


def config_path(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    if explicit:
        return Path(explicit)
    from_env = env.get(ENV_PREFIX + "CONFIG")
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    hint = "fix the file, or point --config / ENGINE_INIT_CONFIG at the right one"
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_CONFIG_MAX_BYTES + 1)
    except IsADirectoryError:
        raise ConfigError(f"config {path} is a directory, not a file", hint=hint) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}", hint=hint) from None
    if len(raw) > _CONFIG_MAX_BYTES:
        raise ConfigError(f"config {path} is larger than 1 MiB", hint=hint)
    try:
        doc = yaml.load(raw.decode("utf-8"), Loader=_loader())
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not UTF-8 text", hint=hint) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config {path}: YAML syntax error{where}: {problem}", hint=hint) from None
    if doc is None:
        raise ConfigError(f"config {path} is empty", hint="see config/engine-init.yaml for a start")
    if not isinstance(doc, dict):
        raise ConfigError(f"config {path}: the top level must be a mapping of keys, "
                          f"not {type(doc).__name__}", hint=hint)
    return doc


def _env_overrides(env: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    import yaml

    from app.config import config_keys

    fields = config_keys()
    out: dict[str, tuple[str, Any]] = {}
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX) or var[len(ENV_PREFIX):] in RESERVED_ENV:
            continue
        key = var[len(ENV_PREFIX):].lower()
        if key not in fields:
            raise ConfigError(f"{var}: no config key {key!r}",
                              hint=f"valid keys: {', '.join(sorted(fields))}")
        try:
            out[key] = (var, yaml.safe_load(text) if text.strip() else None)
        except yaml.YAMLError:
            raise ConfigError(f"{var}: value {text!r} is not valid YAML",
                              hint="quote strings; use [a, b] for lists") from None
    return out


def _format(exc: ValidationError, from_env: dict[str, str]) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ""
        for item in err["loc"]:
            loc += f"[{item}]" if isinstance(item, int) else (f".{item}" if loc else str(item))
        top = str(err["loc"][0]) if err["loc"] else ""
        if top in from_env:
            loc = f"{loc} (from {from_env[top]})"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "model_type":  # not "... or instance of BackboneConfig": YAML has none
            msg = "Input should be a valid dictionary"
        parts.append(f"{loc or 'config'}: {msg}")
    return "; ".join(parts)


def load_config(
    explicit: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    check_files: bool = True,
) -> EngineInitConfig:
    """Read, override and validate the config; raise :class:`ConfigError` with one line."""
    from pydantic_core import ValidationError

    from app.config import validate_config

    env = os.environ if env is None else env
    path = config_path(explicit, env)
    doc = _read_yaml(path)
    overrides = _env_overrides(env)
    for key, (_, value) in overrides.items():
        doc[key] = value
    context = {"base_dir": path.resolve().parent, "check_files": check_files}
    try:
        return validate_config(doc, context)
    except ValidationError as exc:
        from_env = {key: var for key, (var, _) in overrides.items()}
        raise ConfigError(f"config {path}: {_format(exc, from_env)}",
                          hint="run `engine-init schema` for every key and its type") from None


def _scan_for_key(path: Path, key: str) -> dict[str, Any]:
    """For YAML that does not parse: a top-level ``<key>: <path>`` line, if any."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")[:_CONFIG_MAX_BYTES]
    except OSError:
        return {}
    match = re.search(rf"^{key}:[ \t]*['\"]?([^'\"#\n]+?)['\"]?[ \t]*(?:#.*)?$", text, re.M)
    return {key: match[1]} if match else {}


_DEFAULTS = {"cache_root": DEFAULT_CACHE_ROOT, "readiness_marker": DEFAULT_MARKER}


def path_hint(
    key: str, explicit: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None,
    *, scan_only: bool = False,
) -> Path | None:
    """Best effort, without validating: the path a config names for ``cache_root`` or
    ``readiness_marker``, even when the config is invalid or does not parse (then from a
    top-level ``<key>: <path>`` line). ``run`` uses it to remove a stale marker when it cannot
    start (no failure may leave the stack gated open), and to find last boot's engines early:
    ``scan_only`` reads only such a line, without loading PyYAML."""
    env = os.environ if env is None else env
    path = config_path(explicit, env)
    raw: object = env.get(ENV_PREFIX + key.upper())
    if raw is None:
        try:
            doc = _scan_for_key(path, key) if scan_only else _read_yaml(path)
        except ConfigError:
            doc = _scan_for_key(path, key)
        raw = doc.get(key, str(_DEFAULTS[key]))
    if not isinstance(raw, str) or not raw or "\0" in raw:
        return None
    found = Path(os.path.expanduser(raw))
    return found if found.is_absolute() else Path(os.path.normpath(path.resolve().parent / found))
