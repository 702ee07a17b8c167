"""README stays true: every TOML example in it is accepted by the validator it documents."""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path

import pytest

from pipeline import config
from pipeline.scan.policy import parse_exceptions

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", README.read_text(), re.S)


def test_readme_has_config_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_toml_example_is_valid(index):
    text = textwrap.dedent(BLOCKS[index])
    if "[[exceptions]]" in text:
        assert parse_exceptions(text, f"README toml block {index}")
        return
    data = tomllib.loads(text)
    data.setdefault("image", {"name": "app"})
    config.parse(data, f"README toml block {index}")
