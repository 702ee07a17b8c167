"""Record real Trivy reports for the unit tests: ``python -m tests.support.record_trivy [OUT]``.

Two small root filesystems (Alpine 3.19 with musl/busybox; Debian 12 with openssl/zlib,
two Python dist-infos and a file holding a GitHub-token-shaped string) are scanned by
the real Trivy binary against the synthetic DB of :mod:`tests.support.trivydb`:

* ``<fs>/all.json``: the unfiltered report (what the gate reads);
* ``<fs>/<variant>.json``: the same scan with Trivy's own filter flags, so the tests
  can check that ``pipeline scan --report`` on ``all.json`` with the equivalent policy
  blocks/suppresses exactly what Trivy kept/dropped.

``VARIANTS`` maps each variant to its Trivy flags and the equivalent ``[scan]`` policy;
it is written next to the reports as ``variants.json``. The ignore files used are
written there too. Re-run after changing the DB or the trees (needs only trivy).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import trivydb

OUT = Path(__file__).resolve().parents[1] / "data" / "trivy"
SEV = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")

TRIVYIGNORE = """\
# comments and blank lines are skipped

CVE-2099-0002 exp:2099-12-31 # future expiry: still ignored
CVE-2099-0003 exp:2020-01-01
CVE-2099-1001 exp:2099-13-01
   CVE-2099-1006    trailing words are harmless
github-pat
"""

TRIVYIGNORE_YAML = """\
vulnerabilities:
  - id: CVE-2099-0001
    statement: accepted for the test
    expired_at: 2099-01-01
  - id: CVE-2099-0005
    expired_at: 2020-01-01
  - id: CVE-2099-2001
    paths:
      - "usr/lib/python3/**/METADATA"
  - id: GHSA-aaaa-bbbb-cccc
    purls:
      - "pkg:pypi/requests"
  - id: CVE-2099-1005
    paths:
      - "nowhere/**"
  - id: CVE-2099-1002
    purls:
      - "pkg:deb/debian/libssl3?distro=debian-12.5"
secrets:
  - id: github-pat
    paths:
      - "app/*.py"
"""


def _threshold(s: str) -> str:
    return ",".join(SEV[SEV.index(s):])


VARIANTS: dict[str, dict] = {}
for _s in SEV:
    VARIANTS[f"sev-{_s}"] = {"args": ["--severity", _threshold(_s)], "policy": {"fail_on": _s}}
    VARIANTS[f"sev-{_s}-unfixed"] = {"args": ["--severity", _threshold(_s), "--ignore-unfixed"],
                                     "policy": {"fail_on": _s, "ignore_unfixed": True}}
VARIANTS["status-will_not_fix-affected"] = {
    "args": ["--ignore-status", "will_not_fix,affected"],
    "policy": {"fail_on": "UNKNOWN", "ignore_statuses": ["will_not_fix", "affected"]}}
VARIANTS["status-fixed"] = {"args": ["--ignore-status", "fixed"],
                            "policy": {"fail_on": "UNKNOWN", "ignore_statuses": ["fixed"]}}
VARIANTS["trivyignore"] = {"args": ["--ignorefile", "trivyignore"],
                           "policy": {"fail_on": "UNKNOWN", "trivyignore": "trivyignore"}}
VARIANTS["trivyignore-yaml"] = {"args": ["--ignorefile", "trivyignore.yaml"],
                                "policy": {"fail_on": "UNKNOWN", "trivyignore": "trivyignore.yaml"}}


def alpine(root: Path, musl: str = "1.2.4-r2") -> Path:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "lib/apk/db").mkdir(parents=True, exist_ok=True)
    (root / "etc/alpine-release").write_text("3.19.1\n")
    (root / "lib/apk/db/installed").write_text(apk_installed(musl))
    return root


def apk_installed(musl: str = "1.2.4-r2", arch: str = "x86_64") -> str:
    return (f"P:musl\nV:{musl}\nA:{arch}\nL:MIT\no:musl\n\n"
            f"P:busybox\nV:1.36.1-r15\nA:{arch}\nL:GPL-2.0-only\no:busybox\n\n")


#: an Alpine-looking image per platform, for releases the gate scans: the base plus an apk database
ALPINE_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG TARGETARCH
COPY alpine-release /etc/alpine-release
COPY apk-${TARGETARCH}/installed /lib/apk/db/installed
COPY app.txt /app.txt
"""


def alpine_files(musl_amd64: str, musl_arm64: str) -> dict[str, str]:
    """The build context files of :data:`ALPINE_DOCKERFILE` with these musl versions."""
    return {"alpine-release": "3.19.1\n", "apk-amd64/installed": apk_installed(musl_amd64, "x86_64"),
            "apk-arm64/installed": apk_installed(musl_arm64, "aarch64")}


def debian(root: Path) -> Path:
    for d in ("etc", "var/lib/dpkg", "app", "usr/lib/python3/dist-packages/requests-2.28.1.dist-info",
              "usr/lib/python3/dist-packages/urllib3-1.26.12.dist-info"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/debian_version").write_text("12.5\n")
    (root / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
                                         'VERSION_ID="12"\nID=debian\n')
    (root / "var/lib/dpkg/status").write_text(
        "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl\n"
        "Version: 3.0.11-1~deb12u2\nDescription: SSL shared libraries\n\n"
        "Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nSource: zlib\n"
        "Version: 1:1.2.13.dfsg-1\nDescription: compression library\n\n")
    for name, version, lic in (("requests", "2.28.1", "Apache 2.0"), ("urllib3", "1.26.12", "MIT")):
        (root / f"usr/lib/python3/dist-packages/{name}-{version}.dist-info/METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nLicense: {lic}\n")
    token = "ghp_" + "R8xq2LmN4pT7vW1zK3bY6cJ9dF0gH5sA2eUi"      # made up, GitHub-token shaped
    (root / "app/settings.py").write_text(f'token = "{token}"\n')
    return root


def trivy(cwd: Path, cache: Path, target: str, out: Path, extra: list[str]) -> None:
    argv = ["trivy", "rootfs", "--cache-dir", str(cache), "--skip-db-update", "--skip-java-db-update",
            "--offline-scan", "--scanners", "vuln,secret", "--format", "json", "--output", str(out), *extra, target]
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True, timeout=300)


def tidy(path: Path) -> None:
    """Stable files: drop the run's timestamp and IDs, keep everything Trivy decided."""
    doc = json.loads(path.read_text())
    for key in ("CreatedAt", "ReportID"):
        doc.pop(key, None)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def record(out: Path = OUT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "trivyignore").write_text(TRIVYIGNORE)
    (out / "trivyignore.yaml").write_text(TRIVYIGNORE_YAML)
    (out / "variants.json").write_text(json.dumps(VARIANTS, indent=2) + "\n")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        trivydb.write_db(tmp / "cache" / "db")
        shutil.copy(out / "trivyignore", tmp / "trivyignore")
        shutil.copy(out / "trivyignore.yaml", tmp / "trivyignore.yaml")
        alpine(tmp / "rootfs" / "alpine")
        debian(tmp / "rootfs" / "debian")
        for fs in ("alpine", "debian"):
            dest = out / fs
            dest.mkdir(exist_ok=True)
            trivy(tmp, tmp / "cache", f"rootfs/{fs}", dest / "all.json", [])
            tidy(dest / "all.json")
            for name, v in VARIANTS.items():
                trivy(tmp, tmp / "cache", f"rootfs/{fs}", dest / f"{name}.json", v["args"])
                tidy(dest / f"{name}.json")
    print(f"recorded into {out}")


if __name__ == "__main__":
    record(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
