"""pipeline.lazy: slow dependencies load on first use, without the optional extras they would pull in."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from pipeline import lazy

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> str:
    """A new interpreter in the checkout (its embedded default config), so nothing is imported yet."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          check=True, cwd=ROOT).stdout.strip()


def test_plan_imports_none_of_the_slow_dependencies():
    out = _python("""
        import io, sys
        from pipeline.cli import main
        main(["plan"], stdout=io.StringIO(), stderr=io.StringIO())
        print(sorted(m for m in ("httpx", "tenacity", "structlog", "rich", "click") if m in sys.modules))
    """)
    assert out == "[]"


def test_a_stand_in_imports_on_first_use_without_the_hidden_extras():
    out = _python("""
        import sys
        from pipeline import lazy
        httpx = lazy("httpx")
        before = "httpx" in sys.modules
        client = httpx.Client          # first use
        print(before, "httpx" in sys.modules, "httpx._main" in sys.modules, "click" in sys.modules)
        import rich                     # hidden only while httpx was imported
        print(rich.__name__)
    """)
    assert out.splitlines() == ["False True False False", "rich"]


def test_the_stand_in_gives_the_real_module_attributes():
    tenacity = lazy("tenacity")
    import tenacity as real

    assert tenacity.Retrying is real.Retrying
    assert lazy("tenacity") is tenacity


def test_a_logger_set_up_by_someone_after_configure_is_left_alone():
    """configure() only records; the first logger applies it, unless something (a test's capture_logs, an
    embedding program) configured structlog since: then theirs wins and events reach it."""
    out = _python("""
        import io
        from pipeline import log
        from structlog.testing import capture_logs
        log.configure("json", stream=io.StringIO())
        with capture_logs() as events:
            log.get(stage="x").info("thing.happened")
        print([e["event"] for e in events])
    """)
    assert out == "['thing.happened']"
