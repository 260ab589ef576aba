"""deploy/k8s: every manifest validated by kubernetes-validate against the Kubernetes OpenAPI
schemas it bundles (strict: an unknown field is an error), then what a schema cannot say: the
security context equals compose.yaml's, the cache is a per-node hostPath, and the Job routes
exactly the documented exit codes.

What is not run here: the manifests on a cluster (no k3s node with a GPU on CI).
docs/tensorrt.md: "What was proven where"."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import errors
from app.cli import exit_code_for
from tests.deploy.settings import VIDEO_GID, compose_settings, require
from tests.helpers import REPO

K8S = REPO / "deploy" / "k8s"
#: podFailurePolicy is GA from Kubernetes 1.31; also the newest schema the validator has.
VERSIONS = ("1.31.0", "latest")
MARKER_DIR = "/run/engine-init"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _one(name: str, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _docs(name) if d["kind"] == kind]
    return doc


def _validator() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        require(False, "kubernetes-validate is not installed (pip install -e '.[dev]')")
    return kubernetes_validate


def _validate(doc: dict[str, Any], version: str) -> None:
    kv = _validator()
    kv.validate(doc, kv.latest_version() if version == "latest" else version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_manifests_are_valid_kubernetes(path: Path, version: str):
    docs = _docs(path.name)
    assert docs
    for doc in docs:
        _validate(doc, version)


@pytest.mark.parametrize(("where", "value"), [
    (("spec", "template", "spec", "securityContext", "runAsUsr"), 10001),  # a misspelled field
    (("spec", "backoffLimit"), "three"),                                     # a wrong type
    (("spec", "podFailurePolicy", "rules", 0, "action"), None),              # a required field
])
def test_the_validator_catches_a_broken_manifest(where, value):
    kv = _validator()
    doc = copy.deepcopy(_one("prebuild-job.yaml", "Job"))
    node = doc
    for key in where[:-1]:
        node = node[key]
    if value is None:
        del node[where[-1]]
    else:
        node[where[-1]] = value
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, kv.latest_version(), strict=True)


def _pod(name: str, kind: str) -> dict[str, Any]:
    return _one(name, kind)["spec"]["template"]["spec"]


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name]
    return found


def _security(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """The container's effective settings, in compose_settings' terms."""
    ctx = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    volumes = {v["name"]: v for v in pod["volumes"]}
    host, memory, marker = set(), set(), []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        mode = "ro" if mount.get("readOnly") else "rw"
        if mount["mountPath"] == MARKER_DIR:
            marker.append((volume, mode))
        elif "hostPath" in volume:
            host.add((volume["hostPath"]["path"], mount["mountPath"], mode))
        elif volume.get("emptyDir", {}).get("medium") == "Memory" and mode == "rw":
            memory.add(mount["mountPath"])
        else:
            raise AssertionError(f"mount {mount} is not compared with compose.yaml")
    assert "add" not in ctx.get("capabilities", {})
    assert ctx.get("privileged", False) is False and ctx["runAsNonRoot"] is True
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}  # Docker's default under compose
    # Docker gives the image's uid its primary group from the image's /etc/passwd (10001);
    # Kubernetes needs it spelled out.
    assert ctx["runAsGroup"] == ctx["runAsUser"]
    return {
        "user": str(ctx["runAsUser"]),
        "groups": frozenset(str(g) for g in ctx.get("supplementalGroups", [])),
        "read_only": ctx["readOnlyRootFilesystem"],
        "cap_drop": frozenset(ctx["capabilities"]["drop"]),
        "no_new_privileges": ctx["allowPrivilegeEscalation"] is False,
        "tmpfs": frozenset(memory),
        "host_volumes": frozenset(host),
        "marker": marker,
        "env": {e["name"]: e["value"] for e in container.get("env", [])},
        "image": container["image"],
    }


def _compose(service: str) -> dict[str, Any]:
    want = compose_settings(service)
    # Compose binds host /run/engine-init for the marker; a pod keeps it in its own emptyDir.
    want["host_volumes"] = frozenset(v for v in want.pop("volumes") if v[1] != MARKER_DIR)
    want["groups"] = frozenset(str(VIDEO_GID) if g == "video" else g
                               for g in want["groups"] | {"video"})
    return want


_COMPARED = ("user", "groups", "read_only", "cap_drop", "no_new_privileges", "tmpfs",
             "host_volumes", "env", "image")


@pytest.mark.parametrize(("name", "kind"), [("navigation-pod.yaml", "Deployment"),
                                            ("prebuild-job.yaml", "Job")])
def test_engine_init_runs_as_under_compose(name, kind):
    pod = _pod(name, kind)
    got, want = _security(pod, _container(pod, "engine-init")), _compose("engine-init")
    assert {k: got[k] for k in _COMPARED} == {k: want[k] for k in _COMPARED}
    assert pod["runtimeClassName"] == want["runtime"] == "nvidia"
    (runtime_class,) = _docs("runtimeclass.yaml")
    assert runtime_class["metadata"]["name"] == "nvidia" and runtime_class["handler"] == "nvidia"
    ((volume, mode),) = got["marker"]
    assert mode == "rw" and "emptyDir" in volume
    # The ENGINE_INIT_* variables a Service named engine-init would inject are config errors.
    assert pod["enableServiceLinks"] is False and pod["automountServiceAccountToken"] is False
    assert _container(pod, "engine-init")["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_navigation_waits_for_engine_init_on_the_node_cache():
    pod = _pod("navigation-pod.yaml", "Deployment")
    assert [c["name"] for c in pod["initContainers"]] == ["engine-init"]
    assert [c["name"] for c in pod["containers"]] == ["navigation"]
    cache = {v["name"]: v for v in pod["volumes"]}["cache"]
    # Per node, surviving the pod; never created root-owned by the kubelet.
    assert cache["hostPath"] == {"path": "/var/lib/engine-init/cache", "type": "Directory"}
    got, want = _security(pod, _container(pod, "navigation")), _compose("navigation")
    same = ("user", "read_only", "cap_drop", "no_new_privileges", "host_volumes")
    assert {k: got[k] for k in same} == {k: want[k] for k in same}
    init_marker = _security(pod, _container(pod, "engine-init"))["marker"][0][0]
    assert got["marker"] == [(init_marker, "ro")]  # the same folder, read-only
    deployment = _one("navigation-pod.yaml", "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_the_pull_job_runs_as_compose_fleet_pull_and_cannot_write_the_cache():
    """The boundary (docs/fleet.md): the network-facing pull writes the candidates hostPath
    only; the boot's init container reads the same folder read-only."""
    pod = _pod("fleet-pull-job.yaml", "Job")
    got, want = _security(pod, _container(pod, "engine-init-pull")), _compose("fleet-pull")
    assert {k: got[k] for k in _COMPARED} == {k: want[k] for k in _COMPARED}
    assert pod["runtimeClassName"] == want["runtime"] == "nvidia"
    candidates = "/var/cache/engine-init/candidates"
    writable = [(host, target) for host, target, mode in got["host_volumes"] if mode == "rw"]
    assert writable == [("/var/lib/engine-init/candidates", candidates)]
    boot = _security(*(lambda p: (p, _container(p, "engine-init")))(
        _pod("navigation-pod.yaml", "Deployment")))
    assert ("/var/lib/engine-init/candidates", candidates, "ro") in boot["host_volumes"]
    job = _one("fleet-pull-job.yaml", "Job")["spec"]
    codes = {r["action"]: r["onExitCodes"]["values"] for r in job["podFailurePolicy"]["rules"]
             if "onExitCodes" in r}
    assert codes == {"FailJob": [65, 78], "Count": [69, 74, 75]}


def test_the_prebuild_job_has_no_network():
    """compose's network_mode: none, as a deny-all NetworkPolicy on the Job's pods."""
    labels = _one("prebuild-job.yaml", "Job")["spec"]["template"]["metadata"]["labels"]
    policy = _one("prebuild-job.yaml", "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in policy and "egress" not in policy  # no rule: nothing allowed
    assert compose_settings("engine-init")["network"] == "none"


def _documented_codes() -> dict[int, str]:
    """README's table of exit codes (the one headed ``| code | meaning |``)."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("| code | meaning |"):].split("\n\n", 1)[0]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+) \|$", table, re.M)}


def test_the_job_routes_exactly_the_documented_exit_codes():
    job = _one("prebuild-job.yaml", "Job")["spec"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy is refused otherwise
    assert 1 <= job["backoffLimit"] <= 6 and job["activeDeadlineSeconds"] >= 3600
    permanent = sorted({exit_code_for(e("x")) for e in (
        errors.ConfigError, errors.ModelDataError, errors.BackendUnavailableError,
        errors.HostProbeError, errors.EngineBuildError)})
    transient = sorted({exit_code_for(e("x")) for e in (errors.CacheIOError, errors.LockTimeoutError)})
    assert permanent == [65, 69, 70, 78] and transient == [74, 75]
    documented = _documented_codes()
    assert "config" in documented[78] and "model" in documented[65]
    assert "unavailable" in documented[69] and "I/O" in documented[74] and "lock" in documented[75]

    by_action: dict[str, list[int]] = {}
    for rule in job["podFailurePolicy"]["rules"]:
        assert ("onExitCodes" in rule) != ("onPodConditions" in rule)  # one of them, not both
        if "onPodConditions" in rule:
            assert rule == {"action": "Ignore", "onPodConditions": [
                {"type": "DisruptionTarget", "status": "True"}]}
            continue
        codes = rule["onExitCodes"]
        assert codes["operator"] == "In" and codes["containerName"] == "engine-init"
        _container(pod, codes["containerName"])
        # The API server's rules: ascending, no duplicates, no 0 with In.
        assert codes["values"] == sorted(set(codes["values"])) and 0 not in codes["values"]
        assert rule["action"] not in by_action
        by_action[rule["action"]] = codes["values"]
    assert by_action == {"FailJob": permanent, "Count": transient}
