"""Releases survive registries that fail like public ones (issue 11 §6): random faults, bursts, a dead registry.

Three real registries sit behind :class:`tests.support.faultproxy.FaultProxy` instances that fail a
seeded share of *every* client's requests (our registry client; BuildKit's cache import, the only
registry traffic BuildKit still has; cosign and Trivy have none left): 429 with Retry-After, 503,
resets before and after the registry did the work, truncated bodies, 2 s stalls. Each release is a
new version with new build inputs (tests/support/faultrig.py), and what the registries hold
afterwards is read independently.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from tests.support.faultrig import (assert_released, release_env, reset, run_release, stats_of,
                                    version_tags, write_config)
from tests.support.project import http_tags

FIGURES: dict[str, Any] = {}


# --------------------------------------------------------------------------- random faults


RELEASES = int(os.environ.get("PIPELINE_FAULT_RELEASES", "5"))


def test_releases_succeed_at_10_percent_faults_on_every_registry(rig):
    reset(rig.proxies, rate=0.10)
    started = time.monotonic()
    results = []
    for i in range(1, RELEASES + 1):
        version = f"2.{i}.0"
        cfg = write_config(rig, name="faults/random", release=i)
        out = run_release(cfg, release_env(rig.signing, version), rig.workdir)
        assert out.code == 0, out.err[-6000:]
        digest = assert_released(rig.registries, "faults/random", version, rig.signing["pub"])
        retried = [e for e in out.events if e.get("event") == "request.retried"]
        results.append({"version": version, "digest": digest, "retries": len(retried)})
    figures = stats_of(rig.proxies)
    figures.update({"releases": len(results), "succeeded": len(results), "rate": 0.10,
                    "seconds": round(time.monotonic() - started, 1),
                    "retries": sum(r["retries"] for r in results)})
    FIGURES["random"] = figures
    print(f"\nfault releases: {json.dumps(figures)}")
    assert sum(figures["faults"].values()) > 0 and figures["faults"].keys() >= {"429", "503", "reset"}
    writers = {r.agent for p in rig.proxies.values() for r in p.records() if r.method in ("PUT", "PATCH", "POST",
                                                                                          "DELETE")}
    assert writers == {"pipeline"}, f"something else wrote to a registry: {writers}"   # BuildKit, cosign: none
    reset(rig.proxies)


# --------------------------------------------------------------------------- bursts


def test_two_8_second_bursts_of_429_during_a_release_are_waited_out_as_retry_after_says(
        rig):
    reset(rig.proxies)
    hub = rig.proxies["hub"]
    bursts: list[str] = []

    @hub.on_request
    def burst(method: str, path: str, headers: Any) -> None:
        if len(bursts) == 0 and method == "POST" and "/blobs/uploads/" in path:        # the upload starts
            bursts.append(path)
            hub.burst(8.0, retry_after=2)
        elif len(bursts) == 1 and not hub.bursting and method == "GET" and path.endswith(".sig"):   # rig.signing
            bursts.append(path)
            hub.burst(8.0, retry_after=2)

    try:
        cfg = write_config(rig, name="faults/burst", release=1)
        out = run_release(cfg, release_env(rig.signing, "3.1.0"), rig.workdir)
    finally:
        hub.remove_hook(burst)
    assert out.code == 0, out.err[-6000:]
    assert len(bursts) == 2, bursts
    assert_released(rig.registries, "faults/burst", "3.1.0", rig.signing["pub"])
    waits = [e for e in out.events if e.get("event") == "request.retried" and e.get("registry") == "hub"
             and e.get("status") == 429]
    assert waits, "the client never waited for the bursts"
    assert all(e["retry_after"] == 2 and e["wait_seconds"] >= 2 for e in waits), waits   # Retry-After honoured
    FIGURES["burst"] = {"bursts": 2, "seconds": 8, "retry_after": 2, "waits_recorded": len(waits),
                        "min_wait": min(e["wait_seconds"] for e in waits), **stats_of(rig.proxies)}
    print(f"\nburst release: {json.dumps(FIGURES['burst'])}")


# --------------------------------------------------------------------------- a dead registry


@pytest.mark.parametrize("policy", ["all-or-nothing", "best-effort"])
def test_a_dead_registry_fails_the_release_after_the_budget_naming_it(
        policy, rig):
    reset(rig.proxies)
    rig.proxies["hub"].dead = True
    extra = f'[copy]\nfailure_policy = "{policy}"\n'
    cfg = write_config(rig, name=f"faults/dead-{policy}", release=1,
                       extra=extra)
    cfg.write_text(cfg.read_text().replace("budget_seconds = 60", "budget_seconds = 4"))
    version = "4.1.0"
    try:
        out = run_release(cfg, release_env(rig.signing, version), rig.workdir)
    finally:
        rig.proxies["hub"].dead = False
    assert out.code == 3, out.err[-4000:]
    line = next(ln for ln in out.err.splitlines() if ln.startswith("pipeline: error:"))
    assert "hub" in line and "server error 503" in line and "gave up after" in line, line
    for n in ("ghcr", "ecr"):
        tags = http_tags(rig.registries[n], f"faults/dead-{policy}")
        if policy == "all-or-nothing":
            assert not set(version_tags(version)) & set(tags), f"{n} got release tags: {tags}"
        else:
            assert set(version_tags(version)) <= set(tags), f"{n}: best-effort tags where the copy worked: {tags}"
    assert http_tags(rig.registries["hub"], f"faults/dead-{policy}") == []


def test_figures_for_the_reliability_notes():
    """Prints what the fault tests measured (docs/reliability.md quotes these)."""
    print(f"\nreliability figures: {json.dumps(FIGURES, sort_keys=True)}")
    assert FIGURES.get("random", {}).get("succeeded") == RELEASES

