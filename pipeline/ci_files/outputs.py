"""Native CI outputs, built from the release manifest (``dist/release.json``).

* **GitHub**: ``$GITHUB_OUTPUT`` gets ``status``, ``digest``, ``version``, ``tags``, ``refs`` and
  ``images`` (multi-line values use the ``name<<DELIMITER`` form; the delimiter is derived from
  the value's hash, so it never occurs in it and the file is the same for the same release).
  The step summary is the report stage's markdown (already appended to ``$GITHUB_STEP_SUMMARY``).
* **GitLab**: ``<dist>/release.env``, a dotenv report (``artifacts:reports:dotenv``):
  ``PIPELINE_STATUS``, ``PIPELINE_DIGEST``, ``PIPELINE_VERSION``, ``PIPELINE_TAGS`` (comma
  separated), ``PIPELINE_IMAGES`` (``image@digest``, comma separated), ``PIPELINE_IMAGE`` (the first).
* **Jenkins** (and GitLab's ``reports:junit``): ``<dist>/junit.xml``, one test case per stage
  (failed stages fail, skipped and not-built stages are skipped) and one per registry (the
  digest and the tags written there).

The dotenv and JUnit files are written on every run, whatever the CI (same inputs, same files);
``$GITHUB_OUTPUT`` only where it is set.
"""

from __future__ import annotations

import hashlib
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

GITHUB_KEYS = ("status", "digest", "version", "tags", "refs", "images")
DOTENV_FILE = "release.env"
JUNIT_FILE = "junit.xml"
_DOTENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _released(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Registries the digest reached (all of them before a copy stage ran: the release's intent)."""
    regs = list(data.get("registries") or [])
    with_digest = [r for r in regs if r.get("digest")]
    return with_digest or regs


def refs(data: Mapping[str, Any]) -> list[str]:
    """``image:tag`` for every release tag in every registry the release reached."""
    return [f"{r['image']}:{t}" for r in _released(data) for t in data.get("tags") or []]


def images(data: Mapping[str, Any]) -> list[str]:
    """``image@digest`` per registry (the reference deployments should use)."""
    digest = data.get("digest")
    if not digest:
        return []
    return [f"{r['image']}@{r.get('digest') or digest}" for r in _released(data)]


def github_outputs(data: Mapping[str, Any]) -> dict[str, str]:
    return {
        "status": str(data.get("status") or ""),
        "digest": str(data.get("digest") or ""),
        "version": str(data.get("version") or ""),
        "tags": "\n".join(data.get("tags") or []),
        "refs": "\n".join(refs(data)),
        "images": "\n".join(images(data)),
    }


def github_output_text(outputs: Mapping[str, str]) -> str:
    """``$GITHUB_OUTPUT`` lines: ``key=value``, or ``key<<DELIM`` … ``DELIM`` for multi-line values."""
    lines: list[str] = []
    for key, value in outputs.items():
        if "\n" in value or "\r" in value:
            delim = "ghadelimiter_" + hashlib.sha256(f"{key}\0{value}".encode()).hexdigest()[:24]
            assert delim not in value
            lines += [f"{key}<<{delim}", value, delim]
        else:
            lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def _dotenv_value(value: str) -> str:
    return " ".join(str(value).split())  # GitLab dotenv values are one line


def dotenv(data: Mapping[str, Any]) -> str:
    imgs = images(data)
    values = {
        "PIPELINE_STATUS": data.get("status") or "",
        "PIPELINE_DIGEST": data.get("digest") or "",
        "PIPELINE_VERSION": data.get("version") or "",
        "PIPELINE_TAGS": ",".join(data.get("tags") or []),
        "PIPELINE_IMAGE": imgs[0] if imgs else "",
        "PIPELINE_IMAGES": ",".join(imgs),
    }
    assert all(_DOTENV_NAME.match(k) for k in values)
    return "".join(f"{k}={_dotenv_value(v)}\n" for k, v in values.items())


def junit_xml(data: Mapping[str, Any]) -> str:
    stages = list(data.get("stages") or [])
    registries = list(data.get("registries") or [])
    suite = ET.Element("testsuite", name=f"pipeline release {data.get('image', '')}".strip())
    failures = skipped = 0
    total = 0.0
    for st in stages:
        seconds = float(st.get("seconds") or 0)
        total += seconds
        case = ET.SubElement(suite, "testcase", classname="pipeline.release.stages", name=str(st.get("stage")),
                             time=f"{seconds:.3f}")
        status = st.get("status")
        detail = str(st.get("detail") or "")
        if status == "failed":
            failures += 1
            ET.SubElement(case, "failure", message=detail[:1000], type=f"exit {st.get('exit_code', '')}").text = detail
        elif status in ("skipped", "pending"):
            skipped += 1
            ET.SubElement(case, "skipped", message=detail[:1000] or status)
        elif detail:
            ET.SubElement(case, "system-out").text = detail
    for reg in registries:
        case = ET.SubElement(suite, "testcase", classname="pipeline.release.registries", name=str(reg.get("name")),
                             time="0.000")
        if reg.get("error"):
            failures += 1
            ET.SubElement(case, "failure", message=str(reg["error"])[:1000], type="copy").text = str(reg["error"])
        elif not reg.get("digest"):
            skipped += 1
            ET.SubElement(case, "skipped", message="the release did not reach this registry")
        else:
            written = ", ".join(reg.get("tags_written") or []) or "none"
            ET.SubElement(case, "system-out").text = f"{reg.get('image')}@{reg.get('digest')}; tags written: {written}"
    suite.set("tests", str(len(stages) + len(registries)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    suite.set("time", f"{total:.3f}")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write(data: Mapping[str, Any], dist: Path, env: Mapping[str, str]) -> dict[str, str]:
    """Write every native output; returns ``{what: path}`` for the log."""
    written = {"dotenv": str(_write(dist / DOTENV_FILE, dotenv(data))),
               "junit": str(_write(dist / JUNIT_FILE, junit_xml(data)))}
    github_output = env.get("GITHUB_OUTPUT")
    if github_output:
        with Path(github_output).open("a", encoding="utf-8") as fh:
            fh.write(github_output_text(github_outputs(data)))
        written["github_output"] = github_output
    return written


__all__ = ["DOTENV_FILE", "GITHUB_KEYS", "JUNIT_FILE", "dotenv", "github_output_text", "github_outputs", "images",
           "junit_xml", "refs", "write"]
