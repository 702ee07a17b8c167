"""The release manifest (``dist/release.json``) and the human / CI summaries built from it."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.stage import StageResult

MANIFEST_VERSION = 1


def release_manifest(ctx: Any, results: list[StageResult]) -> dict[str, Any]:
    """Everything a later tool (inventory, prune, CI outputs) needs to know about this release."""
    out = ctx.outputs
    tags = out.get("tags")
    build = out.get("build")
    copy = out.get("copy")
    tag = out.get("tag")
    registries: list[dict[str, Any]] = []
    for reg in ctx.config.release_registries:
        repo = reg.repository(ctx.config.image.name)
        entry: dict[str, Any] = {"name": reg.name, "url": reg.url, "repository": repo,
                                 "image": reg.image(ctx.config.image.name)}
        if build:
            entry["digest"] = build.digest if (copy and reg.name in copy.copied) else None
            entry["platforms"] = dict(build.platforms) if entry["digest"] else {}
        if copy and reg.name in copy.copied:
            entry["copy"] = dict(copy.copied[reg.name].stats)
        if copy and reg.name in copy.failed:
            entry["error"] = copy.failed[reg.name]
        if tag:
            entry["tags_written"] = tag.written.get(reg.name, [])
            entry["tags_present"] = tag.present.get(reg.name, [])
            entry["tags_held_by_newer"] = dict(tag.yielded.get(reg.name, {}))   # shared tag -> newer release
        registries.append(entry)
    failed = [r for r in results if r.status == "failed"]
    return {
        "warnings": release_warnings(out),
        "manifest_version": MANIFEST_VERSION,
        "status": "failed" if failed else "ok",
        "error": failed[0].detail if failed else None,
        "released_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # wall clock: push time for prune
        "image": ctx.config.image.name,
        "version": tags.result.version if tags else None,
        "tags": list(tags.result.tags) if tags else [],
        "digest": build.digest if build else None,
        "platforms": dict(build.platforms) if build else {},
        "candidate": ({"registry": build.registry, "repository": build.repository, "tag": build.candidate_tag,
                       "reused": build.reused, "key": build.key, "base_image": build.base_image} if build else None),
        "registries": registries,
        "base_images": _base_images(out),
        "labels": dict(tags.result.labels) if tags else {},
        "context": ctx.ci.to_dict(),
        "stages": [r.to_dict() for r in results],
        "outputs": {k: _plain(v) for k, v in out.items() if k not in ("tags", "build", "copy", "tag", "mirror")},
    }


def _base_images(outputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Each base image: reference, digest, the mirror's copy, whether the upstream was asked; the offline
    base where it replaced one."""
    mirrored = outputs.get("mirror")
    items = [b.to_dict() for b in mirrored.bases] if mirrored is not None else []
    if mirrored is not None:
        items += [{"reference": ref, "digest": None, "mirror": None, "upstream_asked": True, "copied": False,
                   "source": "unavailable", "reason": why} for ref, why in mirrored.unavailable]
    build = outputs.get("build")
    if build is not None and getattr(build, "base_image", None):
        items.append({"reference": build.base_image, "digest": None, "mirror": None, "upstream_asked": False,
                      "copied": False, "source": "offline_base"})
    return items


def release_warnings(outputs: dict[str, Any]) -> list[str]:
    """What a reader must not miss about this release, in sentences."""
    warnings: list[str] = []
    scan = outputs.get("scan") or outputs.get("scan_gate")
    if scan is not None and not getattr(scan, "vulnerabilities_scanned", True):
        warnings.append("vulnerabilities were NOT scanned: no vulnerability DB was reachable and "
                        "scan.vuln_db_required = false (only secrets were scanned)")
    sign = outputs.get("sign")
    if sign is not None and getattr(sign, "development_key", False):
        warnings.append("signed with a DEVELOPMENT key generated on this machine: set [sign] key for real releases")
    build = outputs.get("build")
    if build is not None and getattr(build, "base_image", None):
        warnings.append(f"the public base image could not be pulled: built FROM the local offline base "
                        f"{build.base_image}")
    return warnings


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items() if not isinstance(v, bytes)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return None
    return value


def write_manifest(data: dict[str, Any], dist: Path) -> Path:
    """``dist/release.json`` (this run), plus ``dist/releases/<time>-<digest>.json`` for every run
    that published something: the history prune and inventory read push times from."""
    path = _write_json(dist / "release.json", data)
    if data.get("digest") and any(r.get("tags_written") for r in data.get("registries", [])):
        stamp = str(data.get("released_at", "")).replace(":", "").replace("-", "").split("+")[0]
        _write_json(dist / "releases" / f"{stamp}-{data['digest'].split(':')[-1][:12]}.json", data)
    return path


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def markdown_summary(data: dict[str, Any]) -> str:
    """A step summary for GitHub (and a readable artifact elsewhere)."""
    icon = "✅" if data["status"] == "ok" else "❌"
    lines = [f"## {icon} Release of `{data['image']}` {data.get('version') or ''}".rstrip(), ""]
    if data.get("error"):
        lines += [f"**Failed:** {data['error']}", ""]
    lines += [f"> ⚠️ {w}" for w in data.get("warnings", [])] + ([""] if data.get("warnings") else [])
    if data.get("digest"):
        lines += [f"Digest: `{data['digest']}`", ""]
    if data.get("tags"):
        lines += ["Tags: " + ", ".join(f"`{t}`" for t in data["tags"]), ""]
    lines += ["| registry | image | digest | tags written |", "|---|---|---|---|"]
    for reg in data["registries"]:
        digest = (reg.get("digest") or "–")[:19]
        written = ", ".join(reg.get("tags_written") or []) or ("(already there)" if reg.get("tags_present") else "–")
        lines.append(f"| {reg['name']} | `{reg['image']}` | `{digest}` | {written} |")
    lines += ["", "| stage | status | seconds |", "|---|---|---|"]
    for st in data["stages"]:
        lines.append(f"| {st['stage']} | {st['status']} | {st['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def text_summary(data: dict[str, Any]) -> str:
    """The terminal table (rich), plain when not a terminal."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    buf = StringIO()
    console = Console(file=buf, width=120, no_color=True, highlight=False, markup=False)
    title = f"release {data['image']} {data.get('version') or ''}: {data['status']}"
    table = Table(title=title, show_lines=False)
    for col in ("registry", "image", "digest", "tags written", "tags present"):
        table.add_column(col)
    for reg in data["registries"]:
        table.add_row(reg["name"], reg["image"], (reg.get("digest") or "-")[:19],
                      ", ".join(reg.get("tags_written") or []) or "-", ", ".join(reg.get("tags_present") or []) or "-")
    console.print(table)
    stages = Table(show_header=True)
    for col in ("stage", "status", "seconds", "detail"):
        stages.add_column(col)
    for st in data["stages"]:
        stages.add_row(st["stage"], st["status"], f"{st['seconds']:.2f}", st["detail"][:70])
    console.print(stages)
    for warning in data.get("warnings", []):
        console.print(f"WARNING: {warning}")
    return buf.getvalue().rstrip()
