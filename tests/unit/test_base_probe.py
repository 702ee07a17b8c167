"""image.offline_base: the base image is replaced only when its registry is definitely unreachable.

Before the fix the probe was anonymous with one attempt, so a private base image or one 429 made the
release build FROM busybox. Now any answer (401, 403, 429, 5xx) means the registry is there, the probe
authenticates with the docker config's credentials, and only "nothing answered" replaces the base.
"""

from __future__ import annotations

import base64
import json
import socket

import httpx
import pytest

from pipeline.build import base
from pipeline.tools import registry as R
from tests.support.fakeregistry import FakeRegistry, LazyTransport, _error


@pytest.fixture
def through(monkeypatch):
    """The probe's client talks to ``fake`` (a FakeRegistry or a handler)."""
    def use(fake):
        class Routed(R.Registry):
            def __init__(self, host, **kw):
                super().__init__(host, **{**kw, "transport": LazyTransport(fake)})
        monkeypatch.setattr(R, "Registry", Routed)
        return fake
    return use


@pytest.mark.parametrize("status, code", [(429, "TOOMANYREQUESTS"), (503, "UNAVAILABLE"), (403, "DENIED"),
                                          (401, "UNAUTHORIZED")])
def test_any_answer_means_the_base_image_registry_is_there(through, status, code):
    through(lambda req: _error(status, code))
    unreachable, why = base.probe("registry.example.com/team/base:1", {})
    assert unreachable is False, why


def test_the_probe_authenticates_with_the_docker_config(through, tmp_path):
    fake = through(FakeRegistry(auth="basic", host="registry.example.com"))
    fake.manifests = {"team/base": {}}
    cfg = tmp_path / "docker"
    cfg.mkdir()
    auth = base64.b64encode(f"{fake.user}:{fake.password}".encode()).decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {"registry.example.com": {"auth": auth}}}))
    base.probe("registry.example.com/team/base:1", {"DOCKER_CONFIG": str(cfg)})
    heads = [r for r in fake.requests("HEAD")]
    assert heads and all(status != 401 for _, _, status in heads), heads   # it asked with the credentials


def test_only_a_registry_nothing_answers_for_is_unreachable():
    with socket.socket() as s:                     # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable, why = base.probe(f"127.0.0.1:{port}/team/base:1", {})
    assert unreachable is True and "cannot connect" in why


def test_a_name_that_does_not_resolve_is_unreachable(through):
    def no_such_host(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno -2] Name or service not known", request=request)
    through(no_such_host)
    unreachable, why = base.probe("registry-1.docker.io/library/busybox:1.36", {})
    assert unreachable is True and "cannot connect to registry-1.docker.io" in why
