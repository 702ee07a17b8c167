"""Shared unit-test fixtures."""

from tests.support.fakecosign import fake_cosign  # noqa: F401  (a fixture: a fake cosign first on PATH)
