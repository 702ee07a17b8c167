"""Native CI outputs from the release manifest: $GITHUB_OUTPUT, GitLab dotenv, JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from pipeline.ci_files import outputs as ciout

DIGEST = "sha256:" + "ab" * 32
MANIFEST = {
    "status": "ok", "error": None, "image": "team/app", "version": "1.2.3", "tags": ["1.2.3", "1.2", "latest"],
    "digest": DIGEST,
    "registries": [
        {"name": "ghcr", "image": "ghcr.io/acme/team/app", "digest": DIGEST,
         "tags_written": ["1.2.3", "1.2", "latest"]},
        {"name": "ecr", "image": "1.dkr.ecr.eu-west-1.amazonaws.com/team/app", "digest": DIGEST, "tags_written": []},
    ],
    "stages": [{"stage": "tags", "status": "ok", "detail": "3 tags", "seconds": 0.01, "exit_code": 0},
               {"stage": "scan", "status": "skipped", "detail": "scan.enabled = false", "seconds": 0, "exit_code": 0},
               {"stage": "build", "status": "ok", "detail": "built <index> & pushed", "seconds": 12.5, "exit_code": 0}],
}


def parse_github_output(text: str) -> dict[str, str]:
    """Read $GITHUB_OUTPUT the way the runner does (key=value, key<<DELIM … DELIM)."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line:
            i += 1
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delim = line.split("<<", 1)
            j = lines.index(delim, i + 1)
            out[key] = "\n".join(lines[i + 1:j])
            i = j + 1
        else:
            key, value = line.split("=", 1)
            out[key] = value
            i += 1
    return out


def test_github_outputs_documented_keys_and_multiline_values():
    outputs = ciout.github_outputs(MANIFEST)
    assert tuple(outputs) == ciout.GITHUB_KEYS
    text = ciout.github_output_text(outputs)
    parsed = parse_github_output(text)
    assert parsed["digest"] == DIGEST and parsed["version"] == "1.2.3" and parsed["status"] == "ok"
    assert parsed["tags"].split("\n") == ["1.2.3", "1.2", "latest"]
    assert parsed["refs"].split("\n") == [f"ghcr.io/acme/team/app:{t}" for t in MANIFEST["tags"]] + \
        [f"1.dkr.ecr.eu-west-1.amazonaws.com/team/app:{t}" for t in MANIFEST["tags"]]
    assert parsed["images"].split("\n") == [f"ghcr.io/acme/team/app@{DIGEST}",
                                            f"1.dkr.ecr.eu-west-1.amazonaws.com/team/app@{DIGEST}"]
    assert "tags<<ghadelimiter_" in text
    assert ciout.github_output_text(outputs) == text  # same release, same file


def test_failed_release_before_build_has_empty_values():
    data = {"status": "failed", "image": "app", "version": None, "tags": [], "digest": None,
            "registries": [{"name": "r", "image": "r.io/app"}], "stages": []}
    parsed = parse_github_output(ciout.github_output_text(ciout.github_outputs(data)))
    assert parsed == {"status": "failed", "digest": "", "version": "", "tags": "", "refs": "", "images": ""}


def test_dotenv_is_one_line_per_variable():
    text = ciout.dotenv(MANIFEST)
    values = dict(line.split("=", 1) for line in text.splitlines())
    assert values["PIPELINE_DIGEST"] == DIGEST and values["PIPELINE_TAGS"] == "1.2.3,1.2,latest"
    assert values["PIPELINE_IMAGE"] == f"ghcr.io/acme/team/app@{DIGEST}"
    assert values["PIPELINE_IMAGES"].count("@") == 2 and values["PIPELINE_STATUS"] == "ok"
    assert all("\n" not in v for v in values.values())


def test_junit_has_a_case_per_stage_and_registry():
    root = ET.fromstring(ciout.junit_xml({**MANIFEST, "stages": MANIFEST["stages"] + [
        {"stage": "copy", "status": "failed", "detail": "registry ecr: <denied> & more", "seconds": 1.0,
         "exit_code": 3}]}))
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "6" and suite.get("failures") == "1" and suite.get("skipped") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["copy"].find("failure").get("message") == "registry ecr: <denied> & more"
    assert cases["scan"].find("skipped") is not None
    assert "tags written: 1.2.3, 1.2, latest" in cases["ghcr"].find("system-out").text


def test_write_puts_files_in_dist_and_appends_github_output(tmp_path: Path):
    gh = tmp_path / "gh_output"
    gh.write_text("earlier=1\n")
    written = ciout.write(MANIFEST, tmp_path / "dist", {"GITHUB_OUTPUT": str(gh)})
    assert set(written) == {"dotenv", "junit", "github_output"}
    assert (tmp_path / "dist" / "release.env").read_text().startswith("PIPELINE_STATUS=ok\n")
    ET.parse(tmp_path / "dist" / "junit.xml")
    parsed = parse_github_output(gh.read_text())
    assert parsed["earlier"] == "1" and parsed["digest"] == DIGEST
    assert set(ciout.write(MANIFEST, tmp_path / "d2", {})) == {"dotenv", "junit"}
