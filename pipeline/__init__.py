"""pipeline: a release orchestrator for container images."""

__version__ = "0.1.0"
