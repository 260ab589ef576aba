"""The fleet commands in the image (its fleet extra: cryptography, oras): a key pair made in a
container, a reference robot's engines pushed to a real registry on the host's loopback, pulled
by a second robot's container into a candidates volume of its own (the puller does not mount
the cache), and promoted by its offline boot, which mounts the candidates read-only."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.container.images import HARDENED, run
from tests.fleet.helpers import serve_registry

pytestmark = pytest.mark.docker
UID = 10001
CANDIDATES = "/var/cache/engine-init/candidates"  # <cache_root>/candidates: its own volume


def _robot_like(robot, root):  # type: ignore[no-untyped-def]
    """Another robot: the same models, an empty cache and run folder owned by the job."""
    shutil.copytree(robot / "models", root / "models")
    for name in ("cache", "run", "candidates"):
        (root / name).mkdir()
        os.chown(root / name, UID, UID)
    return root


def test_a_robot_pulls_and_promotes_what_a_reference_robot_pushed(client, image, robot, tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    os.chown(keys, UID, UID)
    key_mount = {str(keys): {"bind": "/keys", "mode": "rw"}}
    code, logs = run(client, image, ["fleet", "keygen", "/keys/fleet.pem", "/keys/fleet.pub.pem"],
                     volumes=key_mount, **HARDENED)
    assert code == 0, logs
    # The registry listens on the host's loopback: the fleet commands use the host's network,
    # the boots none.
    online = {**HARDENED, "network_mode": "host"}
    with serve_registry(tmp_path / "registry") as registry:
        repository = ["--repository", registry.repository(), "--insecure"]
        code, logs = run(client, image, ["run"], robot, **HARDENED)
        assert code == 0, logs
        code, logs = run(client, image, ["push", *repository, "--private-key", "/keys/fleet.pem"],
                         robot, volumes=key_mount, **online)
        assert code == 0 and registry.repository() in logs, logs
        other = _robot_like(robot, tmp_path / "other")
        candidates = str(other / "candidates")
        # As compose's fleet-pull: the models (the config names them) and the candidates only.
        code, logs = run(client, image, ["pull", *repository, "--public-key", "/keys/fleet.pub.pem"],
                         volumes={**key_mount, str(other / "models"): {"bind": "/models", "mode": "ro"},
                                  candidates: {"bind": CANDIDATES, "mode": "rw"}}, **online)
        assert code == 0 and "stored: 9 file(s)" in logs, logs
    assert list((other / "cache").iterdir()) == []  # the puller never saw the cache
    # The offline boot checks the candidates' signature again, with the fleet's public key.
    code, logs = run(client, image, ["run"], other,
                     volumes={**key_mount, candidates: {"bind": CANDIDATES, "mode": "ro"}},
                     env={"ENGINE_INIT_FLEET": "{public_key_file: /keys/fleet.pub.pem}"}, **HARDENED)
    assert code == 0 and "ready: 0 built, 0 reused, 3 promoted" in logs, logs
    for engine in (other / "cache").glob("*.ort"):
        assert engine.read_bytes() == (robot / "cache" / engine.name).read_bytes()

