"""Where a fleet registry is, and how to say that it could not be reached.

A repository is ``host[:port]/name``, ``name`` in the OCI distribution spec's grammar; it is
checked before any request, because a registry answers a name outside it with a plain
"404 page not found" that says nothing about the repository. A registry on ``localhost`` or
127.0.0.0/8 (``::1``) is plain HTTP, as Docker treats it, so hints never ask for ``--insecure``
there.
"""

from __future__ import annotations

import ipaddress
import re

from app.errors import ConfigError

CONNECT_S = 10.0  # how long a connection may take to be accepted, whatever the read timeout


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``name[:port]``, ``[v6]:port``) is this machine: localhost, 127.0.0.0/8, ::1."""
    name = host.rsplit("]", 1)[0].lstrip("[") if host.startswith("[") else host.rsplit(":", 1)[0]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# The OCI distribution spec's grammar of a repository name (after host[:port]/).
_NAME = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_NAME_RULE = ("path components of lowercase letters and digits, joined inside by '.', '_', "
              "'__' or dashes, separated by '/' (the OCI distribution spec)")


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
    """The hint for registry ``host`` that could not be reached (plain HTTP is mentioned only
    where it was not used: a loopback registry or --insecure is plain HTTP already)."""
    return "check the network and --repository" + (
        "" if insecure or is_loopback(host) else "; plain HTTP needs --insecure")


def what_happened(exc: BaseException, timeout_s: float) -> str:
    """A failed request in words: refused at once, timed out, or neither."""
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return f"did not accept a connection within {min(CONNECT_S, timeout_s):g} s"
    if isinstance(exc, requests.Timeout):
        return f"did not answer within {timeout_s:g} s"
    text = str(exc)
    if isinstance(exc, requests.ConnectionError) and ("Connection refused" in text
                                                      or "ECONNREFUSED" in text):
        return "refused the connection (nothing listens there)"
    return "cannot be reached"
