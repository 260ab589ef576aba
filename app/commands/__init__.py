"""The commands beside ``run``: here ``validate``, ``status``, ``verify``, ``prune``,
``wait-ready`` and ``schema``; the fleet's in :mod:`.fleet` and :mod:`.fleet_trust`. Only
:mod:`app.cli` imports this layer (pyproject.toml's ``layers``), which maps errors to exit codes."""

from __future__ import annotations

import gc
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from app import errors

if TYPE_CHECKING:
    from app.config import EngineInitConfig
    from app.host.identity import HardwareIdentity
    from app.job import Prepared

LOGGER = logging.getLogger("engine_init")


def end_startup() -> None:
    """The collector, off for the start-up (app/__main__.py), back on; what it made stays."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


class State:
    """What every command is handed (``click.pass_obj``): the config, loaded when asked for."""

    def __init__(self, config: str | None) -> None:
        self.config_arg = config

    def config(self, check_files: bool = True) -> EngineInitConfig:
        from app.loading import load_config

        try:
            return load_config(self.config_arg, check_files=check_files)
        finally:
            end_startup()

    def host(self, config: EngineInitConfig | None = None) -> tuple[EngineInitConfig, Prepared,
                                                                     HardwareIdentity]:
        from app.job import prepare

        config = config or self.config()
        prepared = prepare(config, LOGGER)
        assert prepared.compiler.identity is not None  # prepare() always gives it one
        return config, prepared, prepared.compiler.identity


@click.command(short_help="Check the config without touching the cache.")
@click.pass_obj
def validate(state: Any) -> None:
    """Check the config (keys, types, paths) without touching the cache; with TensorRT installed
    and backend tensorrt or auto, also each model's ops against that release (exit 65)."""
    config = state.config()
    from app.host.probe import find_tensorrt

    installed = find_tensorrt()
    if config.backend in ("tensorrt", "auto") and installed.present:
        found = _tensorrt_ops(config, installed.version)
        _echo_ops(found, installed.version)
        refused = [(n, f) for n, fs in found.items() for f in fs if f.refuse]
        if refused:
            name, first = refused[0]
            raise errors.ModelDataError(f"{name}: TensorRT {installed.version} cannot build it: "
                                        f"{first.message}", hint=first.hint)
    click.echo(f"config OK: {len(config.backbones)} model(s), backend {config.backend}, "
               f"cache {config.cache_root}")


def _tensorrt_ops(config: Any, version: str) -> dict[str, list[Any]]:
    """What TensorRT ``version`` cannot import, per model."""
    from app.backends.tensorrt.opsupport import check_corpus
    from app.config import BackboneSpec

    specs = [BackboneSpec.from_config(b) for b in config.backbones]
    return check_corpus(((s.model_name, s.onnx_path, s.shapes()) for s in specs), version)


_as_json = click.option("--json", "as_json", is_flag=True,
                        help="One JSON document instead of a table.")


@click.command(short_help="Show the SKU key and what a run would do per model.")
@_as_json
@click.pass_obj
def status(state: Any, as_json: bool) -> None:
    """Show this host's SKU key and, per model, the engine a run would use and whether it is
    reusable, or will be promoted from the fleet's candidates, or built."""
    held = state.host()
    rows, sku = _inspect(held, strict=False)
    config, prepared, _ = held
    version = prepared.report.capabilities.trt_full
    found = _tensorrt_ops(config, version) if prepared.backend.name == "tensorrt" and version else {}
    for row in rows:
        if row["model_name"] in found:
            row["tensorrt_ops"] = [f.as_dict() for f in found[row["model_name"]]]
    _print_rows(rows, as_json, sku)
    if not as_json:
        _echo_ops(found, version)


@click.command(short_help="Re-hash every engine, candidate and ONNX model.")
@_as_json
@click.pass_obj
def verify(state: Any, as_json: bool) -> None:
    """Re-hash every engine, candidate and ONNX model; exit 65 if any engine would be rebuilt
    (an engine a pulled candidate will replace is not)."""
    rows, _ = _inspect(state.host(), strict=True)
    _print_rows(rows, as_json)
    bad = [r["model_name"] for r in rows if not r["reusable"] and r["promote"] != "candidate"]
    if bad:
        raise errors.ModelDataError(f"engines that would be rebuilt: {', '.join(bad)}",
                                    hint="run `engine-init run` to rebuild them")


def _echo_ops(found: dict[str, list[Any]], version: str) -> None:
    for name, findings in found.items():
        for f in findings:
            word = "cannot build" if f.refuse else "warning"
            click.echo(f"{name}: TensorRT {version} {word}: {f.message}"
                       + (f" (node {f.node})" if f.node else "") + f"; fix: {f.hint}")


def _inspect(held: Any, strict: bool) -> tuple[list[dict[str, Any]], str]:
    """The rows of ``status`` / ``verify`` and the SKU key; a candidate's ``promote`` is decided
    without the backend's load and the accuracy gate, which ``run`` adds."""
    from dataclasses import replace

    from app.config import EngineCompileRequest

    config, prepared, identity = held
    request = replace(EngineCompileRequest.from_config(config, prepared.report.capabilities),
                      strict_onnx_hash=strict)
    checked = prepared.compiler.check_corpus(request)
    previews = prepared.compiler.preview_promotions(request, checked, read_bytes=strict)
    rows = []
    for spec, path, verdict in checked:
        seen = previews.get(spec.model_name)
        row = {"model_name": spec.model_name, "engine_path": str(path), "reusable": verdict.reuse,
               "reason": verdict.reason, "changed": verdict.changed, "sha256": verdict.digest,
               "promote": "candidate" if seen is not None and seen.digest else None}
        if seen is not None:
            row.update({"candidate_sha256": seen.digest} if seen.digest
                       else {"candidate_rejected": seen.reason})
        rows.append(row)
    return rows, identity.sku_key()


def _print_rows(rows: list[dict[str, Any]], as_json: bool, sku: str = "") -> None:
    if as_json:
        click.echo(json.dumps({**({"sku": sku} if sku else {}), "engines": rows}, indent=2))
        return
    if sku:
        click.echo(f"SKU {sku}")
    width = max([len(r["model_name"]) for r in rows] + [5])
    click.echo(f"{'MODEL':<{width}}  {'STATE':<8}  {'REASON':<14}  ENGINE")
    for r in rows:
        state = "ready" if r["reusable"] else "promote" if r["promote"] else "rebuild"
        reason = r["reason"] + (f"({','.join(r['changed'])})" if r["changed"] else "")
        click.echo(f"{r['model_name']:<{width}}  {state:<8}  {reason:<14}  {Path(r['engine_path']).name}")
        if r.get("candidate_rejected"):
            click.echo(f"{'':<{width}}  candidate rejected: {r['candidate_rejected']}")


@click.command(short_help="Remove engines built for other hosts.")
@click.option("--dry-run", is_flag=True, help="List what would be removed.")
@click.pass_obj
def prune(state: Any, dry_run: bool) -> None:
    """Remove engines (and their sidecars and records) built for other hosts."""
    from app.job import prune_cache

    config, prepared, _ = state.host()
    removed = prune_cache(config, prepared, LOGGER, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for path in removed:
        click.echo(f"{verb} {path}")
    click.echo(f"{verb} {len(removed)} file(s)")


def _seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    # nan would never time out and inf never end: usage errors (exit 2), as a negative number.
    if not math.isfinite(value) or value < 0:
        raise click.BadParameter(f"{value} is not a finite number of seconds >= 0")
    return value


@click.command("wait-ready", short_help="Block until this boot's readiness marker checks out.")
@click.option("--timeout", "timeout_s", type=float, callback=_seconds, default=300.0,
              show_default=True, help="Seconds to wait for this boot's marker.")
@click.option("--verify/--no-verify", "verify_engines", default=False,
              help="Also re-hash every engine named in the marker.")
@click.pass_obj
def wait_ready_cmd(state: Any, timeout_s: float, verify_engines: bool) -> None:
    """Block until this boot's readiness marker exists and checks out."""
    from app.cache.signing import load_key
    from app.readiness import wait_ready

    config = state.config(check_files=False)
    key = load_key(config.signing_key_file) if config.signing_key_file else None
    doc = wait_ready(config.readiness_marker, timeout_s=timeout_s, key=key,
                     verify_engines=verify_engines)
    click.echo(f"ready: {len(doc['engines'])} engine(s) for boot {doc.get('boot_id')}")


@click.command()
def schema() -> None:
    """Print the config's JSON Schema."""
    from app.config import EngineInitConfig

    click.echo(json.dumps(EngineInitConfig.model_json_schema(), indent=2))


def register(group: click.Group) -> None:
    for command in (validate, status, verify, prune, wait_ready_cmd, schema):
        group.add_command(command)
