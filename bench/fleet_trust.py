"""What the fleet's TUF metadata costs (docs/fleet-trust.md): ``pull`` and the promoting ``run``
of a robot with ``fleet.trusted_root_file`` against the same commands of a robot that checks
only the bundle's Ed25519 signature, timed in the same rounds on the same registry and bundle.

The TUF robot starts from nothing each round (its candidates, trusted metadata included, are
removed), so its pull walks the metadata from the provisioned root: the first pull of a robot.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.common import MB, check, report
from bench.fleet import _config, _ok, _rounds, _summary, registry
from tools.demo import make_dinov2_vpr


def trust(tmp: Path, size_mb: int, rounds: int) -> None:
    with registry(tmp / "trust-registry") as address:
        if address is None:
            report("fleet trust: TUF pull and promotion", "skipped: docker-registry is not "
                   "installed (apt-get install docker-registry)", "")
            return
        _measure(tmp / "trust", address, size_mb, rounds)


def _measure(work: Path, address: str, size_mb: int, rounds: int) -> None:
    models = [make_dinov2_vpr(work / "models" / f"m{i}.onnx", seed=i + 1, pad_mb=size_mb * 256 // 364)
              for i in range(3)]
    keys = work / "keys"
    keys.mkdir()
    for name in ("bundle", "root", "targets", "online"):
        _ok("fleet", "keygen", str(keys / f"{name}.pem"), str(keys / f"{name}.pub.pem"))
    repository = f"{address}/fleet/engines"
    meta = work / "meta"
    _ok("fleet", "trust", "init", str(meta), "--repository", repository, "--insecure",
        "--root-key", str(keys / "root.pem"), "--targets-key", str(keys / "targets.pem"),
        "--online-key", str(keys / "online.pem"))
    common = {"repository": repository, "insecure": True}
    reference = _config(work / "reference", models,
                        {**common, "private_key_file": str(keys / "bundle.pem")})
    signed = _config(work / "signed", models, {**common, "public_key_file": str(keys / "bundle.pub.pem")})
    tuf = _config(work / "tuf", models, {**common, "trusted_root_file": str(meta / "1.root.json")})
    _ok("--config", str(reference), "run")
    digest = _ok("--config", str(reference), "push").stdout.strip().rsplit("@", 1)[1]
    sku = json.loads(_ok("--config", str(reference), "status", "--json").stdout)["sku"]
    _ok("fleet", "trust", "release", str(meta), sku, "--digest", digest, "--insecure",
        "--key", str(keys / "targets.pem"), "--key", str(keys / "online.pem"))
    total_mb = sum(p.stat().st_size for p in (work / "reference" / "cache").glob("*.ort")) / MB
    summaries: list[tuple[int, int]] = []

    def fresh(config: Path) -> None:
        shutil.rmtree(config.parent / "cache" / "candidates", ignore_errors=True)

    def no_engines(config: Path) -> None:
        for path in (config.parent / "cache").iterdir():
            if path.is_file() and (".ort" in path.name or path.name == ".engine-init.warm.json"):
                path.unlink()

    def promote(config: Path) -> None:
        done = _summary(_ok("--config", str(config), "run"))
        summaries.append((done["engines_built"], done["engines_promoted"]))

    for config in (signed, tuf):  # the candidates the promoting runs take
        _ok("--config", str(config), "pull")
    best = _rounds(rounds, {
        "promote_signed": (lambda: no_engines(signed), lambda: promote(signed)),
        "promote_tuf": (lambda: no_engines(tuf), lambda: promote(tuf)),
        "pull_signed": (lambda: fresh(signed), lambda: _ok("--config", str(signed), "pull")),
        "pull_tuf": (lambda: fresh(tuf), lambda: _ok("--config", str(tuf), "pull")),
    })
    pull = best["pull_tuf"] / best["pull_signed"]
    report(f"fleet trust: pull under TUF, 3 x {total_mb / 3:.0f} MB, first pull",
           f"{best['pull_tuf']:.3f} s / signature-only {best['pull_signed']:.3f} s = {pull:.2f}x",
           check(pull <= 1.3))
    # A fixed cost (importing tuf and securesystemslib, ~50 ms with -X importtime, and the
    # metadata's signatures checked once): smaller against larger engines.
    run = best["promote_tuf"] / best["promote_signed"]
    report("fleet trust: run promoting them under TUF",
           f"{best['promote_tuf']:.3f} s / signature-only {best['promote_signed']:.3f} s = {run:.2f}x",
           check(run <= 1.2))
    report("  the fixed cost of the TUF check", f"{best['promote_tuf'] - best['promote_signed']:+.3f} s", "")
    report("fleet trust: local builds in the promoting runs", f"{sorted(set(summaries))} (built, promoted)",
           check(set(summaries) == {(0, 3)}))
