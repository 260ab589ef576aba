"""``engine-init export | import | push | pull`` and ``fleet keygen`` (docs/fleet.md; exit codes:
docs/fleet.md#exit-codes-of-pull-and-import). Only click is imported at start-up."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from app import events
from app.commands import end_startup
from app.commands.fleet_trust import KEY_FILE, trust_group

LOGGER = logging.getLogger("engine_init")
_PRIVATE = click.option("--private-key", type=KEY_FILE, default=None,
                        help="Ed25519 private key (PEM) to sign with [default: fleet.private_key_file].")
_PUBLIC = click.option("--public-key", type=KEY_FILE, default=None,
                       help="Ed25519 public key (PEM) to verify with [default: fleet.public_key_file].")


def _setting(given: Any, config: Any, key: str, option: str) -> Any:
    if given is not None:
        return given
    value = getattr(config.fleet, key)
    if value is None:
        from app.errors import ConfigError

        raise ConfigError(f"fleet.{key} is not set and {option} was not given",
                          hint=f"set fleet.{key} in the config, or pass {option}")
    return value


def _repository(given: str | None, config: Any) -> str:
    """--repository, else fleet.repository, checked before the cache is read or the registry asked."""
    from app.fleet import check_repository

    repository: str = _setting(given, config, "repository", "--repository")
    check_repository(repository)
    return repository


def _bundle_files(config: Any, prepared: Any, identity: Any) -> dict[str, Path]:
    """This host's verified engines with their sidecars and records, and the TensorRT timing
    and calibration caches of this exact TensorRT build (docs/fleet.md)."""
    from app import errors
    from app.cache.names import COMPANION_SUFFIXES
    from app.config import EngineCompileRequest

    request = EngineCompileRequest.from_config(config, prepared.report.capabilities)
    rows = prepared.compiler.check_corpus(request)
    missing = [spec.model_name for spec, _, verdict in rows if verdict.reason != "hit"]
    if missing:
        raise errors.ModelDataError(f"engines not ready (or without a provenance record): "
                                    f"{', '.join(missing)}", hint="run `engine-init run` first")
    files: dict[str, Path] = {}
    for _, engine, _ in rows:
        for name in (engine.name, *(engine.name + suffix for suffix in COMPANION_SUFFIXES)):
            files[name] = engine.with_name(name)
    if identity.backend == "tensorrt" and identity.backend_version:
        root, trt = config.cache_root, identity.backend_version
        models = {spec.model_name for spec, _, _ in rows}
        timing = sorted((root / "timing").glob(f"trt{trt}__sm{prepared.report.capabilities.sm}__*.timing"))
        calibration = [p for p in sorted((root / "calibration").glob(f"*__trt{trt}__*.calib"))
                       if p.name.split("__", 1)[0] in models]
        files.update({f"{p.parent.name}/{p.name}": p for p in timing + calibration if p.is_file()})
    return files


def _signed(config: Any, prepared: Any, identity: Any, private_key: Path | None,
            ) -> tuple[Any, Any, dict[str, Any]]:
    """This host's bundle: its files, its signed documents, and what events say of them."""
    from app.fleet import layout
    from app.fleet.bundle import describe, documents, load_private_key

    key = load_private_key(_setting(private_key, config, "private_key_file", "--private-key"))
    files = describe(_bundle_files(config, prepared, identity))
    docs = documents(files, identity, key)
    return files, docs, {"sku": docs.sku, "files": len(files), "bytes": sum(d.size for _, _, d in files),
                         "manifest_digest": layout.descriptor_of(docs.manifest, layout.MANIFEST_TYPE).digest}


def _emit(kind: str, message: str, **kv: Any) -> None:
    events.emit(LOGGER, logging.INFO, kind, message, **kv)


def _stored(result: Any, where: str, config: Any, key: Any) -> None:
    verb = "already stored" if result.already else "stored"
    _emit(events.FLEET_STORED, f"{verb} {result.files} candidate file(s) for {result.sku} "
          f"from {where}", sku=result.sku, files=result.files, bytes=result.bytes,
          manifest_digest=result.manifest_digest, already=result.already)
    click.echo(f"{verb}: {result.files} file(s), {result.bytes} bytes, candidates {result.folder}")
    # run checks the candidates again with the config's public key: without it, or with another
    # key, it rejects every one and builds; say so now, not after the next boot.
    from app.errors import EngineInitError
    from app.fleet.bundle import key_id, load_public_key

    if config.fleet.trusted_root_file is not None:
        return  # run checks the candidates against the fleet's TUF release, which pull verified
    configured = config.fleet.public_key_file
    why = "the config sets no fleet.public_key_file"
    if configured is not None:
        try:
            theirs = key_id(load_public_key(configured))
        except EngineInitError as exc:
            theirs, why = None, f"fleet.public_key_file cannot be used: {exc}"
        if theirs == key_id(key):
            return
        if theirs is not None:
            why = f"fleet.public_key_file is key {theirs}, the bundle verified with {key_id(key)}"
    events.emit(LOGGER, logging.WARNING, events.FLEET_UNVERIFIABLE, f"run will reject these "
                f"candidates and build every engine: {why}", reason=why,
                hint="set fleet.public_key_file to the fleet's public key in the config run reads")


@click.command("export", short_help="Write this host's engines as a signed bundle.")
@click.argument("path", type=click.Path(path_type=Path))
@_PRIVATE
@click.pass_obj
def export_cmd(state: Any, path: Path, private_key: Path | None) -> None:
    """Write this host's engines as a signed bundle: an OCI layout folder, or PATH.tar."""
    from app.fleet.bundle import write_bundle

    config, prepared, identity = state.host()
    files, docs, info = _signed(config, prepared, identity, private_key)
    write_bundle(path, files, docs)
    _emit(events.FLEET_EXPORTED, f"exported {info['files']} file(s) for {docs.sku} to {path}",
          path=str(path), **info)
    click.echo(f"exported {docs.sku}: {info['files']} file(s), {info['bytes']} bytes to {path}")


@click.command("import", short_help="Verify a bundle and store it as this SKU's candidates.")
@click.argument("path", type=click.Path(path_type=Path))
@_PUBLIC
@click.pass_obj
def import_cmd(state: Any, path: Path, public_key: Path | None) -> None:
    """Verify a bundle and store its files as candidates for this host's SKU."""
    from app.fleet.bundle import load_public_key
    from app.fleet.fetch import fetch_bundle, open_bundle

    config = state.config()
    key = load_public_key(_setting(public_key, config, "public_key_file", "--public-key"))
    config, _, identity = state.host(config)
    with open_bundle(path) as source:
        result = fetch_bundle(source, key, identity, config.candidates_root,
                              lock_timeout_s=config.lock_timeout_s)
    _stored(result, str(path), config, key)


_REPO = click.option("--repository", default=None,
                     help="Registry repository, host[:port]/path; the tag is the SKU key "
                          "[default: fleet.repository].")
_INSECURE = click.option("--insecure", is_flag=True, help="Plain HTTP (a registry on a trusted "
                                                          "network; always for localhost and "
                                                          "127.0.0.0/8) [default: fleet.insecure].")


@click.command("push", short_help="Upload this host's signed engines, tagged with its SKU.")
@_REPO
@_INSECURE
@_PRIVATE
@click.pass_obj
def push_cmd(state: Any, repository: str | None, insecure: bool, private_key: Path | None) -> None:
    """Upload this host's engines, signed, tagged with its SKU key; prints repository:tag@digest."""
    from app.cancel import call_cancellable
    from app.fleet.registry import push

    config, prepared, identity = state.host()
    repository = _repository(repository, config)
    files, docs, info = _signed(config, prepared, identity, private_key)
    # In a worker thread: a signal ends the upload at once (143/130), whatever the registry does.
    ref = call_cancellable(lambda: push(repository, files, docs,
                                        insecure=insecure or config.fleet.insecure))
    _emit(events.FLEET_PUSHED, f"pushed {ref}", reference=ref, **info)
    click.echo(ref)


@click.command("pull", short_help="Fetch and verify this SKU's engines as candidates.")
@_REPO
@_INSECURE
@_PUBLIC
@click.pass_obj
def pull_cmd(state: Any, repository: str | None, insecure: bool, public_key: Path | None) -> None:
    """Fetch this SKU's engines, verify them while streaming, store them as candidates."""
    from app.cancel import call_cancellable
    from app.fleet.bundle import load_public_key, require_tuf
    from app.fleet.fetch import fetch_bundle
    from app.fleet.registry import ArtifactAbsentError, RegistrySource

    config = state.config()
    repository = _repository(repository, config)
    # With fleet.trusted_root_file the fleet's TUF metadata decides (docs/fleet-trust.md); the
    # signature is checked too given a key, which is needed without it.
    released = config.fleet.trusted_root_file is not None
    public_file = (public_key or config.fleet.public_key_file) if released else _setting(
        public_key, config, "public_key_file", "--public-key")
    key = load_public_key(public_file) if public_file is not None else None
    config, _, identity = state.host(config)
    sku, limits, insecure = identity.sku_key(), config.fleet, insecure or config.fleet.insecure
    if released:
        require_tuf()
        from app.fleet.tuf_client import pull_release

        trusted, result = pull_release(repository, identity, config.candidates_root,
                                       config.fleet.trusted_root_file, insecure=insecure,
                                       public=key, lock_timeout_s=config.lock_timeout_s, limits=limits)
        _emit(events.FLEET_TRUSTED, f"fleet metadata of {repository} verified: root "
              f"v{trusted['root_version']}, timestamp v{trusted['timestamp_version']} until "
              f"{trusted['expires']}", repository=repository, root_version=trusted["root_version"],
              timestamp_version=trusted["timestamp_version"], expires=trusted["expires"])
        absent = (f"the fleet released no engines for {sku} in {repository}",
                  f"no release for {sku} in {repository}")
    else:
        try:  # in a worker thread: a signal ends the pull at once, whatever it waits on (143)
            result = call_cancellable(lambda: fetch_bundle(
                RegistrySource(repository, insecure=insecure, limits=limits),
                key, identity, config.candidates_root, lock_timeout_s=config.lock_timeout_s))
        except ArtifactAbsentError:
            result = None
        absent = (f"{repository} has no engines for {sku}", f"no artifact for {sku} in {repository}")
    if result is None:
        _emit(events.FLEET_ABSENT, f"{absent[0]}: run builds them here", repository=repository, sku=sku)
        click.echo(absent[1])
        return
    _stored(result, f"{repository}:{result.sku}" + (" (released)" if released else ""), config, key)


@click.group("fleet", short_help="Share engines: bundles, registry, keys and TUF metadata.")
def fleet_group() -> None:
    """Share engines between the robots of a SKU: signed bundles (export, import), an
    OCI registry (push, pull), signing keys (keygen) and the fleet's TUF metadata
    (trust)."""
    end_startup()  # keygen and the trust commands read no config


@fleet_group.command("keygen")
@click.argument("private", type=KEY_FILE)
@click.argument("public", type=KEY_FILE)
def keygen_cmd(private: Path, public: Path) -> None:
    """Write a new Ed25519 key pair (never over an existing file)."""
    from app.fleet.bundle import generate_keypair

    click.echo(f"key {generate_keypair(private, public)}: private {private}, public {public}")


def register(group: click.Group) -> None:
    fleet_group.add_command(trust_group)
    for command in (export_cmd, import_cmd, push_cmd, pull_cmd, fleet_group):
        group.add_command(command)
