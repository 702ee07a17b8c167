"""The dated verdict a ``vuln`` attestation carries: written at release and by ``rescan --attest``, read back.

The predicate is cosign's ``vuln`` predicate as ``trivy convert --format cosign-vuln`` makes it
(``invocation``, ``scanner`` with Trivy's whole report, ``metadata.scanStartedOn``/``scanFinishedOn``),
with the scan time set to when the report was made, ``scanner.db.version`` to the DB's build time, and
what our policy said of the report in ``invocation.parameters.gate``::

    "gate": {"verdict": "pass", "blocking": ["CVE-…"], "counts": {"HIGH": 2, …}, "fail_on": "HIGH",
             "db_built": "2026-12-01T06:12:09Z", "scanned_on": "2026-12-02T03:00:00Z", "source": "rescan"}

Not a member of its own: ``cosign attest --type vuln`` re-encodes the predicate through its own struct
and drops what that struct does not name; ``invocation.parameters`` is free-form there and survives. Read back, only an attestation that
verifies with the configured key (or keyless identity) counts: :func:`verified_records` fetches the
attestations with our client into local layouts and asks cosign there, so no cosign request meets a
registry.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.sign import layouts
from pipeline.times import parse_time
from pipeline.tools import cosign
from pipeline.tools.oci import Descriptor
from pipeline.tools.registry import Registry

VULN = "vuln"


@dataclass(frozen=True)
class Record:
    """One verified vuln attestation's verdict."""

    scanned_on: datetime
    verdict: str                  # pass | fail
    blocking: tuple[str, ...]
    db_built: str
    source: str                   # release | rescan
    counts: tuple[tuple[str, int], ...] = ()   # severity -> findings (after exceptions), as the gate counted

    def line(self) -> str:
        return f"scanned on {self.scanned_on.date().isoformat()}, {len(self.blocking)} blocking"

    def to_dict(self) -> dict[str, Any]:
        return {"scanned_on": self.scanned_on.isoformat(), "verdict": self.verdict, "blocking": list(self.blocking),
                "db_built": self.db_built, "source": self.source, "counts": dict(self.counts)}


def dated_predicate(trivy_predicate: bytes, *, verdict: str, blocking: Sequence[str], counts: Mapping[str, int],
                    fail_on: str, db_built: str, scanned_on: datetime, source: str) -> bytes:
    """Trivy's cosign-vuln predicate with the scan time and our verdict (see the module docstring)."""
    data = json.loads(trivy_predicate)
    # whole seconds: cosign re-encodes the metadata times the Go way (trailing zeros of a fraction dropped)
    when = scanned_on.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    data.setdefault("metadata", {}).update({"scanStartedOn": when, "scanFinishedOn": when})
    scanner = data.setdefault("scanner", {})
    if db_built:
        scanner.setdefault("db", {})["version"] = db_built
    invocation = data.get("invocation") if isinstance(data.get("invocation"), dict) else {}
    parameters = invocation.get("parameters") if isinstance(invocation.get("parameters"), dict) else {}
    parameters["gate"] = {"verdict": verdict, "blocking": sorted(set(blocking)), "counts": dict(counts),
                          "fail_on": fail_on, "db_built": db_built, "scanned_on": when, "source": source}
    invocation["parameters"] = parameters
    data["invocation"] = invocation
    return json.dumps(data, separators=(",", ":")).encode()


def parse_record(statement: Mapping[str, Any]) -> Record | None:
    """The gate's verdict in one verified in-toto statement; None for a vuln predicate without one."""
    predicate = statement.get("predicate")
    if isinstance(predicate, str):        # cosign 2 prints some predicates as a JSON string
        try:
            predicate = json.loads(predicate)
        except ValueError:
            return None
    invocation = predicate.get("invocation") if isinstance(predicate, dict) else None
    parameters = invocation.get("parameters") if isinstance(invocation, dict) else None
    gate = parameters.get("gate") if isinstance(parameters, dict) else None
    if not isinstance(gate, dict):
        return None
    try:
        when = parse_time(str(gate.get("scanned_on", "")))
    except ValueError:
        return None
    if when is None:
        return None
    blocking = gate.get("blocking")
    counts = gate.get("counts") if isinstance(gate.get("counts"), dict) else {}
    return Record(when, str(gate.get("verdict", "")), tuple(str(b) for b in blocking or ()),
                  str(gate.get("db_built", "")), str(gate.get("source", "")),
                  tuple(sorted((str(k), int(v)) for k, v in counts.items() if isinstance(v, int))))


def verified_records(client: Registry, repo: str, subject: Descriptor, subject_body: bytes, runner: cosign.Cosign,
                     verifying: cosign.Verifying, work: Path, what: str) -> list[Record]:
    """Every vuln verdict attached to ``subject`` that verifies with our key, oldest first."""
    found: list[Record] = []
    with tempfile.TemporaryDirectory(prefix="vuln-", dir=work) as tmp:
        got = layouts.fetch(client, repo, subject, subject_body, VULN, Path(tmp))
        for path in (got.legacy, got.bundles):
            if path is None or (path == got.bundles and verifying.major < 3):
                continue
            result = runner.verify_local(str(path), verifying, predicate_type=VULN, what=what)
            if result.ok:
                found += [r for s in result.payloads if (r := parse_record(s)) is not None]
    return sorted(set(found), key=lambda r: r.scanned_on)
