"""``engine-init fleet trust ...``: the operator's commands for the fleet's TUF metadata
(docs/fleet-trust.md#operator-commands; exit codes: docs/fleet-trust.md#exit-codes)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from app.fleet import ROLES

KEY_FILE = click.Path(dir_okay=False, path_type=Path)
_KEYS = click.option("--key", "keys", type=KEY_FILE, multiple=True,
                     help="A private key file to sign with (repeat: e.g. 2 of the 3 root keys).")
_INSECURE = click.option("--insecure", is_flag=True, help="Plain HTTP to the registry.")
_DAYS = click.option("--timestamp-days", type=click.FloatRange(min=0.01), default=None,
                     help="Days until snapshot and timestamp expire [default: 7]; re-sign before "
                          "with `fleet trust timestamp`.")


def _command(name: str, short_help: str, *params: Any, keys: bool = True,
             days: bool = True) -> Callable[[Callable[..., None]], click.Command]:
    """A ``fleet trust`` command taking FOLDER, ``params``, then --key, --insecure and
    --timestamp-days (``keys``, ``days``: whether it takes them)."""
    stack = [click.argument("folder", type=click.Path(file_okay=False, path_type=Path)), *params,
             *([_KEYS] if keys else []), _INSECURE, *([_DAYS] if days else [])]

    def decorate(command: Callable[..., None]) -> click.Command:
        @functools.wraps(command)
        def needs_tuf(**kwargs: Any) -> None:  # when it runs: --help works without the packages
            from app.fleet.bundle import require_tuf

            require_tuf()
            command(**kwargs)

        wrapped: Callable[..., None] = needs_tuf
        for param in reversed(stack):
            wrapped = param(wrapped)
        return trust_group.command(name, short_help=short_help)(wrapped)

    return decorate


def _keys(paths: tuple[Path, ...] | list[Path]) -> Any:
    from app.fleet.bundle import load_key_files

    return load_key_files(list(paths))


def _upload(folder: Path, repository: str, files: list[tuple[str, bytes]], insecure: bool) -> None:
    from app.cancel import call_cancellable
    from app.errors import BuildCancelledError
    from app.fleet.tuf_client import push_metadata

    try:
        call_cancellable(lambda: push_metadata(repository, files, insecure=insecure))
    except BuildCancelledError as exc:
        exc.hint = (f"{folder} is complete; upload it with `engine-init fleet trust push {folder}`"
                    " (robots keep the previous metadata until timestamp.json moves)")
        raise


def _push(repo: Any, insecure: bool) -> None:
    repo.save()
    _upload(repo.folder, repo.repository, repo.written, insecure)
    names = ", ".join(name for name, _ in repo.written)
    click.echo(f"pushed to {repo.repository}: {names}")


def _load(folder: Path) -> Any:
    from app.fleet.tuf_repo import Repo

    return Repo.load(folder)


@click.group("trust", short_help="The fleet's TUF metadata: keys, thresholds, releases.")
def trust_group() -> None:
    """The fleet's TUF metadata: keys, thresholds and releases (docs/fleet-trust.md)."""


@_command("init", "Create the fleet's metadata in FOLDER and push it.",
          click.option("--repository", required=True, help="The registry repository, "
                       "host[:port]/path, the metadata is valid for (and pushed to)."),
          click.option("--root-key", "root_keys", type=KEY_FILE, multiple=True, required=True,
                       help="A root key file (repeat); the private ones sign."),
          click.option("--threshold", type=click.IntRange(min=1), default=1, show_default=True,
                       help="How many root keys must sign a new root."),
          click.option("--targets-key", type=KEY_FILE, required=True, help="The release key (private)."),
          click.option("--online-key", type=KEY_FILE, required=True,
                       help="The snapshot and timestamp key (private)."), keys=False)
def init_cmd(folder: Path, repository: str, root_keys: tuple[Path, ...], threshold: int,
             targets_key: Path, online_key: Path, insecure: bool, timestamp_days: float | None) -> None:
    """Create version 1 of the fleet's metadata in FOLDER and push it. Robots are provisioned
    with FOLDER/1.root.json (fleet.trusted_root_file)."""
    from app.fleet.tuf_repo import Repo

    repo = Repo(folder)
    targets, online = _keys([targets_key, online_key])
    repo.init(repository, _keys(root_keys), threshold, targets, online, timestamp_days=timestamp_days)
    click.echo(f"fleet root for {repository}: {len(root_keys)} root key(s), threshold {threshold}; "
               f"robots trust {folder / '1.root.json'}")
    _push(repo, insecure)


@_command("release", "Release the bundle pushed for SKU to its robots.", click.argument("sku"),
          click.option("--digest", default=None, help="The signed index to release, whatever the "
                       "tag says now: sha256:<64 hex>, or the whole repository:SKU@sha256:<64 hex> "
                       "`push` printed (the repository and SKU must be the ones released)."),
          click.option("--days", type=click.FloatRange(min=0.01), default=None,
                       help="Days until this release's targets expire [default: 365]."))
def release_cmd(folder: Path, sku: str, digest: str | None, keys: tuple[Path, ...], insecure: bool,
                days: float | None, timestamp_days: float | None) -> None:
    """Release the bundle pushed for SKU: its index and files become the targets robots of
    that SKU may promote (signed by the targets key, then snapshot and timestamp)."""
    from app.cancel import call_cancellable
    from app.fleet.tuf_client import released_bundle

    repo = _load(folder)
    index, files = call_cancellable(lambda: released_bundle(repo.repository, sku, digest,
                                                            insecure=insecure))
    version = repo.release(sku, index, files, _keys(keys), days=days, timestamp_days=timestamp_days)
    click.echo(f"released {sku}@{index.digest}: {len(files)} file(s), targets v{version}")
    _push(repo, insecure)


@_command("delegate", "Give SKU's releases a role (and key) of its own.", click.argument("sku"),
          click.option("--sku-key", "sku_keys", type=KEY_FILE, multiple=True, required=True,
                       help="A key of the SKU's own role (repeat; the private ones sign its first "
                       "version)."),
          click.option("--threshold", type=click.IntRange(min=1), default=1, show_default=True,
                       help="How many of them must sign a release of the SKU."))
def delegate_cmd(folder: Path, sku: str, sku_keys: tuple[Path, ...], threshold: int,
                 keys: tuple[Path, ...], insecure: bool, timestamp_days: float | None) -> None:
    """Give SKU's releases to a role of its own (signed by the release key): the SKU's build
    host then releases it with --sku-key, never another SKU. Again: its keys are replaced."""
    repo = _load(folder)
    version = repo.delegate(sku, _keys(sku_keys), threshold, _keys(keys), timestamp_days=timestamp_days)
    click.echo(f"{sku} delegated: {len(sku_keys)} key(s), threshold {threshold}, role v{version}")
    _push(repo, insecure)


@_command("timestamp", "Re-sign snapshot and timestamp so robots keep pulling.")
def timestamp_cmd(folder: Path, keys: tuple[Path, ...], insecure: bool, timestamp_days: float | None) -> None:
    """Re-sign snapshot and timestamp (the online key) so that robots keep pulling: run it
    more often than --timestamp-days (e.g. daily from a timer)."""
    repo = _load(folder)
    repo.timestamp(_keys(keys), days=timestamp_days)
    click.echo(f"timestamp v{repo.md['timestamp'].signed.version} expires "
               f"{repo.md['timestamp'].signed.expires.isoformat()}")
    _push(repo, insecure)


_ROLE = click.argument("role", type=click.Choice(ROLES))
_THRESHOLD = click.option("--threshold", type=click.IntRange(min=1), default=None,
                          help="The role's new threshold [default: unchanged].")


def _change(folder: Path, role: str, keys: tuple[Path, ...], add: list[Path], remove: list[Path],
            threshold: int | None, insecure: bool, what: str) -> None:
    repo = _load(folder)
    added, removed = _keys(add), _keys(remove)
    version = repo.change_keys(role, [*_keys(keys), *added], add=added, remove=removed,
                               threshold=threshold, timestamp_days=None)
    click.echo(f"root v{version}: {what} ({role} keys now {len(repo.root.roles[role].keyids)}, "
               f"threshold {repo.root.roles[role].threshold})")
    _push(repo, insecure)


@_command("add-key", "Give ROLE the key NEW (a new root version).", _ROLE,
          click.argument("new", type=KEY_FILE), _THRESHOLD, days=False)
def add_key_cmd(folder: Path, role: str, new: Path, keys: tuple[Path, ...], threshold: int | None,
                insecure: bool) -> None:
    """Give ROLE the key NEW (a new root version, signed by the root threshold)."""
    _change(folder, role, keys, [new], [], threshold, insecure, f"added {new}")


@_command("revoke-key", "Take the key OLD from ROLE (a new root version).", _ROLE,
          click.argument("old", type=KEY_FILE), _THRESHOLD, days=False)
def revoke_key_cmd(folder: Path, role: str, old: Path, keys: tuple[Path, ...], threshold: int | None,
                   insecure: bool) -> None:
    """Take the key OLD (its public file is enough) from ROLE: robots refuse its signatures from
    their next pull on. A role's metadata is signed again with its remaining keys (--key)."""
    _change(folder, role, keys, [], [old], threshold, insecure, f"revoked {old}")


@_command("rotate-key", "Replace ROLE's key OLD by NEW (a new root version).", _ROLE,
          click.argument("old", type=KEY_FILE), click.argument("new", type=KEY_FILE), days=False)
def rotate_key_cmd(folder: Path, role: str, old: Path, new: Path, keys: tuple[Path, ...],
                   insecure: bool) -> None:
    """Replace ROLE's key OLD by NEW in one new root version (NEW signs what ROLE signs)."""
    _change(folder, role, keys, [new], [old], None, insecure, f"{old} replaced by {new}")


@_command("renew-root", "A new root version with the same keys, for a year.", days=False)
def renew_root_cmd(folder: Path, keys: tuple[Path, ...], insecure: bool) -> None:
    """A new root version with the same keys, expiring in a year: robots refuse everything once
    the newest root has expired, so renew it before (a release renews targets, `timestamp` the
    rest)."""
    _change(folder, "root", keys, [], [], None, insecure, "renewed")


@_command("push", "Upload every file of FOLDER again.", keys=False, days=False)
def push_cmd(folder: Path, insecure: bool) -> None:
    """Upload every file of FOLDER again (roots first, timestamp last)."""
    repo = _load(folder)
    _upload(folder, repo.repository, repo.all_files(), insecure)
    click.echo(f"pushed every file of {folder} to {repo.repository}")
