"""A stand-in for pipeline.access.registries.Access in unit tests: no credentials, no clients unless given."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class FakeAccess:
    """Context manager with Access's surface; ``client`` answers through ``clients`` (None: no registry)."""

    clients: Callable[[Any], Any] | None = None
    docker_config = "/tmp/pipeline-docker-test"

    def __init__(self, config: Any, env: Any) -> None:
        self.config, self.env = config, env

    def __enter__(self) -> FakeAccess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None

    def client(self, reg: Any) -> Any:
        if self.clients is None:
            raise AssertionError(f"this test gives no registry client (asked for {reg.name})")
        return self.clients(reg)

    def tool_env(self) -> dict[str, str]:
        return {"DOCKER_CONFIG": self.docker_config}


def fake_access(clients: Callable[[Any], Any] | None = None, docker_config: str = FakeAccess.docker_config) -> type:
    """A FakeAccess class whose ``client(reg)`` is ``clients(reg)``."""
    return type("FakeAccess", (FakeAccess,), {"clients": staticmethod(clients) if clients else None,
                                               "docker_config": docker_config})
