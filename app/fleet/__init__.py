"""Fleets: engines built once per SKU, shipped as signed OCI bundles, stored as candidates and
promoted by ``run`` (docs/fleet.md#the-trust-model). No CLI code here; ``run`` imports only
promote, candidates and layout, and only when this SKU has candidates."""

from __future__ import annotations

import re

from app.errors import ConfigError

#: How to get the fleet extra's packages (cryptography, oras): engine-init is not on PyPI.
_INSTALL_HINT = ("use the engine-init image (it has them), or install engine-init from its "
                 "source folder with the fleet extra: pip install '.[fleet]'")
#: The top-level roles of the fleet's TUF metadata (``fleet trust`` names them).
ROLES = ("root", "targets", "snapshot", "timestamp")
# The OCI distribution spec's grammar of a repository name (after host[:port]/).
_NAME = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_NAME_RULE = ("path components of lowercase letters and digits, joined inside by '.', '_', "
              "'__' or dashes, separated by '/' (the OCI distribution spec)")


def require(modules: tuple[str, ...], message: str, hint: str = _INSTALL_HINT) -> None:
    """ConfigError (78) with ``message`` unless the optional ``modules`` import."""
    import importlib

    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError:
        raise ConfigError(message, hint=hint) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``name[:port]``, ``[v6]:port``) is this machine: localhost, 127.0.0.0/8, ::1."""
    import ipaddress

    name = host.rsplit("]", 1)[0].lstrip("[") if host.startswith("[") else host.rsplit(":", 1)[0]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_repository(repository: str) -> str:
    """The host[:port] of ``repository``; ConfigError (78) unless it is ``host[:port]/name``
    with ``name`` in the OCI grammar. Checked before any request: a registry answers a name
    outside it (capitals, say) with a plain 404 page, which must never read as "no artifact"."""
    host, _, path = repository.partition("/")
    if not host or not path or "://" in repository or ":" in path or "@" in path:
        raise ConfigError(f"repository {repository!r} (fleet.repository / --repository) is not "
                          "host[:port]/path",
                          hint="e.g. registry.example.com/fleet/engines (the tag is the SKU key)")
    if not _NAME.fullmatch(path):
        raise ConfigError(f"repository {repository!r} (fleet.repository / --repository): the "
                          f"name {path!r} is not a registry repository name",
                          hint=f"use {_NAME_RULE}, e.g. {host}/{path.lower()}")
    return host


def reach_hint(host: str, insecure: bool) -> str:
    """The hint for a registry that could not be reached (plain HTTP is offered only where it
    was not used: a loopback registry or --insecure is plain HTTP already)."""
    return "check the network and --repository" + (
        "" if insecure or is_loopback(host) else "; plain HTTP needs --insecure")
