"""The YAML writer: whatever it writes, a YAML 1.1 reader (PyYAML) reads back as the same data."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.ci_files import yamltext
from pipeline.ci_files.yamltext import Comment

AMBIGUOUS = ["on", "off", "yes", "No", "TRUE", "null", "~", "y", "1.2", "0o17", "0x1F", "1_000", "1:20", ".inf",
             "2024-01-01", "-x", "a: b", "a #b", "#c", "*ref", "&anchor", "!tag", "%x", "@at", "`tick", "[x]",
             "{x}", "'q'", '"d"', "x,", "? q", "| b", "> f", "", " lead", "trail ", "tab\there", "nl\nnl",
             "${{ secrets.X }}", "github.event_name == 'push'", "$CI_COMMIT_TAG =~ /^v.*$/", "100", "-1", "1e3"]


@pytest.mark.parametrize("value", AMBIGUOUS)
def test_ambiguous_strings_stay_strings(value):
    assert yaml.safe_load(yamltext.dump({"k": value})) == {"k": value}
    assert yaml.safe_load(yamltext.dump([value])) == [value]
    assert yaml.safe_load(yamltext.dump({value: 1} if value else {"x": 1})) == ({value: 1} if value else {"x": 1})


def test_plain_where_safe_and_block_literals_for_scripts():
    text = yamltext.dump({"runs-on": "ubuntu-latest", "run": "set -eu\necho hi\n", "uses": "actions/checkout@v4"})
    assert "runs-on: ubuntu-latest\n" in text and "uses: actions/checkout@v4\n" in text
    assert "run: |\n  set -eu\n  echo hi\n" in text


def test_comments_and_nesting():
    text = yamltext.dump({Comment("top\nsecond"): None, "jobs": {"a": {"steps": [{Comment("c"): 0, "run": "x"}]}},
                          "empty": {}, "none": [], "n": None, "b": False}, header="generated")
    assert text.startswith("# generated\n# top\n# second\njobs:\n")
    assert "      # c\n      - run: x\n" in text
    assert yaml.safe_load(text) == {"jobs": {"a": {"steps": [{"run": "x"}]}}, "empty": {}, "none": [], "n": None,
                                    "b": False}


def test_dump_all_is_a_multi_document_stream():
    text = yamltext.dump_all([{"a": 1}, {"b": [1, [2, 3]]}], header="h")
    assert list(yaml.safe_load_all(text)) == [{"a": 1}, {"b": [1, [2, 3]]}]
    assert text.startswith("# h\n---\n")


def test_rejects_what_it_cannot_write():
    with pytest.raises(TypeError):
        yamltext.dump({"a": object()})
    with pytest.raises(TypeError):
        yamltext.dump({1: "a"})
    with pytest.raises(ValueError):
        yamltext.dump({"a": float("nan")})


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30))
keys = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
data = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(keys, inner, max_size=4)), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(data)
@example({"A\n": None})          # a trailing newline once slipped through as a plain scalar
@example(["\n"])                 # a lone newline once became an empty literal block (read back as "")
@example([{"key": "value\n"}])
def test_round_trip(value):
    assert yaml.safe_load(yamltext.dump(value)) == value
