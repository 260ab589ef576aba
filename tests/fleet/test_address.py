"""Where a registry is: loopback hosts, and the OCI grammar of repository names (the
refusals, which come before any request, are in test_registry.py)."""

from __future__ import annotations

import pytest

from app.fleet.address import check_repository, is_loopback


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost:5000", True), ("127.0.0.1", True), ("127.9.9.9:80", True), ("[::1]:5000", True),
    ("registry.example.com:5000", False), ("10.0.0.1:5000", False), ("localhost.example.com", False),
    ("[2001:db8::1]:443", False)])
def test_which_hosts_are_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("good", ["fleet/engines", "a/b.c/d__e", "x/a--b_c", "engines", "0/9"])
def test_names_in_the_oci_grammar_are_accepted(good):
    assert check_repository(f"localhost:5000/{good}") == "localhost:5000"
