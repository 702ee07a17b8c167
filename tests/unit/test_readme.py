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


def _readme_tree() -> str:
    text = README.read_text()
    development = text[text.index("## Development"):]
    return re.search(r"```\n(pipeline/\n.*?)```", development, re.S).group(1)


def test_readme_tree_matches_the_package():
    """README's Development tree names every package folder and every top-level module, and nothing else."""
    package = README.parent / "pipeline"
    tree = _readme_tree()
    folders = {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    listed_folders = set(re.findall(r"^  ([a-z_]+)/", tree, re.M))
    assert listed_folders == folders
    modules = {p.name for p in package.glob("*.py")} - {"__init__.py", "__main__.py"}
    names = [re.split(r"\s{2,}", line.strip())[0] for line in tree.splitlines()[1:]]   # the first column
    listed_modules = {m for name in names for m in re.findall(r"[a-z_]+\.py", name)}
    assert listed_modules == modules
    assert len(modules) <= 12


def test_every_capability_holds_its_modules():
    """At least five capability packages of two or more modules each (the layout the README shows)."""
    package = README.parent / "pipeline"
    sizes = {p.name: len([m for m in p.glob("*.py") if m.name != "__init__.py"])
             for p in package.iterdir() if (p / "__init__.py").exists()}
    capabilities = {name: n for name, n in sizes.items() if name not in ("tools", "stages", "setup") and n >= 2}
    assert len(capabilities) >= 5, sizes
