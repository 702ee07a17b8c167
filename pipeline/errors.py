"""Error types and the exit codes they map to.

Exit codes are a contract with CI systems (documented in README):
0 success, 1 policy said no, 2 bad config or usage, 3 infrastructure or tool
failure (after retries), 130 interrupted.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_POLICY = 1
EXIT_USAGE = 2
EXIT_INFRA = 3
EXIT_INTERRUPTED = 130


class PipelineError(Exception):
    """Base class: every expected failure is one of these and carries its exit code.

    The message is a single line a user can act on; it never contains secrets.
    """

    exit_code = EXIT_INFRA

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # one line, always
        return " ".join(self.message.split("\n"))


class ConfigError(PipelineError):
    """Bad configuration or usage: names the file/field or argument and what to do."""

    exit_code = EXIT_USAGE


class UsageError(ConfigError):
    """Bad command-line usage."""


class PolicyError(PipelineError):
    """A policy said no (scan gate failed, verification failed)."""

    exit_code = EXIT_POLICY


class InfraError(PipelineError):
    """Infrastructure failure: a registry, daemon or network step failed after retries."""

    exit_code = EXIT_INFRA


class ToolError(InfraError):
    """An external tool (docker, buildx, trivy, cosign, git) failed or is missing."""

    def __init__(self, message: str, *, tool: str = "", returncode: int | None = None,
                 stderr: str = "") -> None:
        super().__init__(message)
        self.tool = tool
        self.returncode = returncode
        self.stderr = stderr
