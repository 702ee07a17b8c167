"""kill -9 anywhere, and releases at once: never a release tag on an unscanned or unsigned image (issue 11 §6).

A release runs as a separate process (its own process group: buildx, Trivy and cosign die with it,
as when a CI job is cancelled) against the three registries behind their proxies. It is killed
from outside when its JSON log shows a given event or when a proxy sees a given request, at 12
points from mid-build to mid-verify. After each kill, every release tag in every registry must
point at a digest our key signed (read independently: raw HTTP and cosign run directly); then the
same release runs again and must converge: exit 0, every tag, one signature per digest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.faultrig import NAMES, Rig, assert_released, release_env, reset, run_release, write_config
from tests.support.project import http, http_manifest, http_tags

FIGURES: dict[str, Any] = {}


@dataclass
class Trigger:
    """When to kill: a log event (``event`` and field values) or a request a proxy sees."""

    name: str
    event: dict[str, str] | None = None
    registry: str | None = None
    request: Callable[[str, str], bool] | None = None


@dataclass
class Killed:
    fired: threading.Event = field(default_factory=threading.Event)
    what: str = ""


def run_killed(cfg: Path, env: dict[str, str], cwd: Path, trigger: Trigger,
               proxies: dict[str, FaultProxy]) -> Killed:
    """Start the release and SIGKILL its process group when ``trigger`` fires; wait for it to end."""
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "--log-format", "json", "release", "--config", str(cfg),
                          "--format", "json"], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    killed = Killed()

    def kill(what: str) -> None:
        if not killed.fired.is_set():
            killed.what = what
            killed.fired.set()
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    hook = None
    if trigger.request is not None:
        proxy = proxies[trigger.registry or "ghcr"]

        def hook(method: str, path: str, headers: Any) -> None:
            if trigger.request(method, path):
                kill(f"{method} {path}")
                raise RuntimeError("killed")     # the proxy counts it and answers nothing useful

        proxy.on_request(hook)
    try:
        assert p.stderr is not None
        for line in p.stderr:
            if trigger.event and line.startswith("{"):
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if all(e.get(k) == v for k, v in trigger.event.items()):
                    kill(trigger.event.get("event", ""))
        p.wait(timeout=600)
    finally:
        if hook is not None:
            proxies[trigger.registry or "ghcr"].remove_hook(hook)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return killed


def release_tags(registries: dict[str, Any], name: str) -> dict[str, dict[str, str]]:
    """registry → {release tag: digest} (candidates, cosign's tags and the build cache left out)."""
    out: dict[str, dict[str, str]] = {}
    for n in NAMES:
        found = {}
        for tag in http_tags(registries[n], name):
            if tag.startswith(("candidate-", "sha256-")) or tag == "buildcache":
                continue
            m = http_manifest(registries[n], name, tag)
            if m is not None:
                found[tag] = m[1]
        out[n] = found
    return out


def assert_no_tag_on_an_unsigned_image(registries: dict[str, Any], name: str, pub: str) -> int:
    """Every release tag points at a digest whose signature verifies with our key; how many tags."""
    count = 0
    for n, tags in release_tags(registries, name).items():
        for tag, digest in tags.items():
            r = subprocess.run(["cosign", "verify", "--key", pub, "--insecure-ignore-tlog=true",
                                "--allow-http-registry=true", "--allow-insecure-registry=true",
                                f"{registries[n].host}/{name}@{digest}"], capture_output=True, text=True,
                               timeout=300)
            assert r.returncode == 0, f"{n}: {name}:{tag} → {digest} is not signed by our key: {r.stderr[-500:]}"
            count += 1
    return count


def signature_layers(registries: dict[str, Any], name: str, digest: str) -> dict[str, int]:
    out = {}
    for n in NAMES:
        with http(registries[n]) as client:
            r = client.get(f"/v2/{name}/manifests/{digest.replace(':', '-')}.sig")
        out[n] = len(r.json()["layers"]) if r.status_code == 200 else 0
    return out


def _put_manifest(suffix: str) -> Callable[[str, str], bool]:
    return lambda method, path: method == "PUT" and "/manifests/" in path and path.endswith(suffix)


TRIGGERS = [
    Trigger("mid-build", event={"event": "build.started"}),
    Trigger("mid-scan", event={"event": "image.scan_started"}),
    Trigger("after-the-gate", event={"event": "stage.finished", "stage": "scan"}),
    Trigger("mid-upload-blobs", registry="ghcr",
            request=lambda m, p: m in ("PATCH", "PUT") and "/blobs/uploads/" in p),
    Trigger("mid-upload-manifests", registry="hub",
            request=lambda m, p: m == "PUT" and "/manifests/sha256:" in p),
    Trigger("staging-candidate-tag", registry="ecr", request=lambda m, p: m == "PUT" and "/manifests/candidate-" in p),
    Trigger("mid-sign", registry="ghcr", request=_put_manifest(".sig")),
    Trigger("mid-attest", registry="hub", request=_put_manifest(".att")),
    Trigger("after-sign", event={"event": "stage.finished", "stage": "sign"}),
    Trigger("mid-tag", registry="ecr", request=lambda m, p: m == "PUT" and p.endswith("/manifests/5.0.0")),
    Trigger("after-tag", event={"event": "stage.started", "stage": "verify"}),
    Trigger("mid-verify", event={"event": "release.verified"}),
]


#: kill points at or after the tag stage: some release tags may exist then (on signed digests)
TAGGING = {"mid-tag", "after-tag", "mid-verify"}


@pytest.mark.parametrize("trigger", TRIGGERS, ids=[t.name for t in TRIGGERS])
def test_a_release_killed_anywhere_leaves_no_tag_on_an_unchecked_image_and_a_rerun_converges(
        trigger, rig):
    reset(rig.proxies)
    name = f"faults/kill-{trigger.name}"
    cfg = write_config(rig, name=name, release=1)
    env = release_env(rig.signing, "5.0.0")
    killed = run_killed(cfg, env, rig.workdir, trigger, rig.proxies)
    assert killed.fired.is_set(), f"the trigger {trigger.name} never fired"
    tagged = assert_no_tag_on_an_unsigned_image(rig.registries, name, rig.signing["pub"])
    if trigger.name not in TAGGING:
        assert tagged == 0, f"killed {trigger.name}, before the tag stage, yet {tagged} release tags exist"
    again = run_release(cfg, env, rig.workdir)
    assert again.code == 0, again.err[-6000:]
    digest = assert_released(rig.registries, name, "5.0.0", rig.signing["pub"])
    assert signature_layers(rig.registries, name, digest) == {n: 1 for n in NAMES}   # no second signature
    FIGURES[trigger.name] = {"killed_at": killed.what, "tags_before_rerun": tagged}


def test_kill_figures():
    print(f"\nkill points: {len(FIGURES)}: {json.dumps(FIGURES, sort_keys=True)}")
    assert len(FIGURES) >= 10


# --------------------------------------------------------------------------- releases at once


def _start(cfg: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--log-format", "json", "release", "--config",
                             str(cfg), "--format", "json"], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_versions_at_once_to_the_same_registries_are_both_released(rig):
    reset(rig.proxies, rate=0.05)
    name = "faults/concurrent"
    a = write_config(rig, name=name, release=1)
    b = write_config(rig, name=name, release=2)
    pa = _start(a, release_env(rig.signing, "6.1.0"), rig.workdir)
    pb = _start(b, release_env(rig.signing, "6.2.0"), rig.workdir)
    outs = [p.communicate(timeout=900) for p in (pa, pb)]
    reset(rig.proxies)
    assert pa.returncode == 0, outs[0][1][-4000:]
    assert pb.returncode == 0, outs[1][1][-4000:]
    da = assert_released(rig.registries, name, "6.1.0", rig.signing["pub"])
    db_ = assert_released(rig.registries, name, "6.2.0", rig.signing["pub"])
    assert da != db_
    # whichever wrote last, the tag both make belongs to the newer version, in every registry
    assert _at(rig, name, "latest") == {n: db_ for n in NAMES}

    # a backport after both: its own tags move, latest stays with 6.2.0, and the report says so
    c = write_config(rig, name=name, release=3)
    back = run_release(c, release_env(rig.signing, "6.1.1"), rig.workdir)
    assert back.code == 0, _errors(back.err)
    dc = assert_released(rig.registries, name, "6.1.1", rig.signing["pub"])
    assert _at(rig, name, "6.1") == {n: dc for n in NAMES} and _at(rig, name, "6.1.0") == {n: da for n in NAMES}
    assert _at(rig, name, "latest") == {n: db_ for n in NAMES}
    held = {r["name"]: r["tags_held_by_newer"] for r in back.manifest["registries"]}
    assert held == {n: {"latest": "6.2.0"} for n in NAMES}, held
    assert [e for e in back.events if e.get("event") == "tag.written" and e["ref"].endswith(":latest")] == []


def _at(rig: Rig, name: str, tag: str) -> dict[str, str | None]:
    """Registry -> the digest ``tag`` points at, read straight from each registry."""
    return {n: (found[1] if (found := http_manifest(rig.registries[n], name, tag)) else None) for n in NAMES}


def _errors(stderr: str) -> list[str]:
    """What went wrong in a JSON-log run: the failed stages, warnings and the final error line."""
    return [ln for ln in stderr.splitlines() if '"stage.failed"' in ln or '"warning"' in ln
            or ln.startswith("pipeline: ")] or [stderr[-3000:]]


def test_the_same_version_twice_at_once_on_one_machine_is_done_once(rig):
    reset(rig.proxies)
    name = "faults/twice"
    cfg = write_config(rig, name=name, release=1)
    env = release_env(rig.signing, "7.0.0")
    procs = [_start(cfg, env, rig.workdir) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [_errors(o[1]) for o in outs]
    digest = assert_released(rig.registries, name, "7.0.0", rig.signing["pub"])
    assert signature_layers(rig.registries, name, digest) == {n: 1 for n in NAMES}
    signed = []
    for out, _ in outs:
        items = json.loads(out)["outputs"]["sign"]["items"]
        signed.append(sum(1 for i in items if i["action"] == "signed"))
    assert sorted(signed)[0] == 0 and sum(signed) == sorted(signed)[1] > 0, signed   # one signed, one found it
    reused = sorted(json.loads(out)["candidate"]["reused"] for out, _ in outs)
    assert reused == [False, True], reused                                         # one built, one waited and reused
