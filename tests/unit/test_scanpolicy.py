"""The gate's policy: Trivy's own filtering on real reports, thresholds, exceptions, ignore files."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.errors import ConfigError
from pipeline.scan import doublestar, purl, results
from pipeline.scan.policy import (
    Finding,
    Policy,
    evaluate,
    findings,
    load_policy,
    parse_exceptions,
    parse_trivyignore,
    parse_trivyignore_yaml,
)
from pipeline.tools import trivy

DATA = Path(__file__).resolve().parents[1] / "data" / "trivy"
VARIANTS = json.loads((DATA / "variants.json").read_text())
TODAY = date(2026, 11, 26)     # the recorded ignore files hold 2020 (past) and 2099 (future) dates


def scan_cfg(**kw):
    base = dict(fail_on="HIGH", ignore_unfixed=False, ignore_statuses=[], max_allowed={}, fail_on_secrets=True,
                exceptions_file=None, trivyignore=None)
    base.update(kw)
    return SimpleNamespace(**base)


def key(items):
    return sorted((i["id"], i["package"], i["installed"], i["target"]) for i in items)


def report(name: str, fs: str = "alpine") -> results.Report:
    return results.parse_report((DATA / fs / f"{name}.json").read_bytes())


# --------------------------------------------------------------------------- against Trivy itself


@pytest.mark.parametrize("fs", ["alpine", "debian"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_blocking_is_exactly_what_trivys_own_filters_keep(fs, variant):
    """tests/data/trivy/<fs>/<variant>.json is real Trivy output with the equivalent flags."""
    policy = VARIANTS[variant]["policy"]
    cfg = scan_cfg(**{**policy, "trivyignore": str(DATA / policy["trivyignore"]) if "trivyignore" in policy
                      else None})
    verdict = evaluate(report("all", fs), load_policy(cfg), TODAY).to_dict()
    kept_by_trivy = [f.item() for f in findings(report(variant, fs))]
    assert key(verdict["blocking"]) == key(kept_by_trivy)
    assert verdict["verdict"] == ("fail" if kept_by_trivy else "pass")


def test_threshold_is_not_trivys_exact_set():
    """fail_on = HIGH blocks CRITICAL too (Trivy's --severity HIGH would drop it)."""
    v = evaluate(report("all"), Policy(fail_on="HIGH"), TODAY)
    assert {(f.id, f.severity) for f in v.blocking} == {("CVE-2099-0002", "CRITICAL"), ("CVE-2099-0001", "HIGH")}
    only_high_by_trivy = {f.id for f in findings(report("sev-CRITICAL"))}
    assert only_high_by_trivy == {"CVE-2099-0002"}


def test_verdict_json_shape():
    d = evaluate(report("all"), Policy(fail_on="HIGH", ignore_unfixed=True), TODAY).to_dict()
    assert d["verdict"] == "fail"
    assert d["blocking"][0] == {"id": "CVE-2099-0002", "package": "musl", "installed": "1.2.4-r2",
                                "fixed": "1.2.5-r0", "severity": "CRITICAL", "status": "fixed",
                                "target": "rootfs/alpine (alpine 3.19.1)"}
    assert d["suppressed"] == [{"id": "CVE-2099-0003", "package": "musl", "installed": "1.2.4-r2", "fixed": "",
                                "severity": "MEDIUM", "status": "affected",
                                "target": "rootfs/alpine (alpine 3.19.1)", "by": "ignore_unfixed"}]
    assert d["counts"] == {"UNKNOWN": 1, "LOW": 1, "MEDIUM": 0, "HIGH": 1, "CRITICAL": 1}
    assert set(d) >= {"verdict", "blocking", "suppressed", "counts"}


def test_ignore_unfixed_hides_every_status_but_fixed():
    v = evaluate(report("all", "debian"), Policy(fail_on="UNKNOWN", ignore_unfixed=True, fail_on_secrets=False),
                 TODAY)
    assert {f.status for f in v.blocking} == {"fixed"}
    assert {s.finding.status for s in v.suppressed} == {"will_not_fix", "fix_deferred", "end_of_life", "affected"}


# --------------------------------------------------------------------------- secrets, max_allowed


def test_secrets_fail_by_default_whatever_the_threshold_and_can_be_reported_only():
    v = evaluate(report("all", "debian"), Policy(fail_on="CRITICAL", ignore_unfixed=True), TODAY)
    assert ("github-pat", "secret", "app/settings.py") in {(f.id, f.status, f.target) for f in v.blocking}
    assert v.secrets == 1
    v = evaluate(report("all", "debian"), Policy(fail_on="CRITICAL", ignore_unfixed=True, fail_on_secrets=False),
                 TODAY)
    assert "github-pat" not in {f.id for f in v.blocking} and v.secrets == 1


def f(id_: str, sev: str, pkg: str = "p", status: str = "fixed", **kw) -> Finding:
    return Finding(id_, pkg, "1", "2" if status == "fixed" else "", sev, status, kw.pop("target", "img (alpine)"),
                   **kw)


def test_max_allowed_tolerates_up_to_n_then_blocks_them_all():
    items = [f("A", "HIGH"), f("B", "HIGH"), f("C", "MEDIUM"), f("D", "MEDIUM"), f("E", "MEDIUM")]
    v = evaluate(items, Policy(fail_on="HIGH", max_allowed={"HIGH": 2}), TODAY)
    assert v.passed and {x.id for x in v.tolerated} == {"A", "B"}
    v = evaluate(items, Policy(fail_on="HIGH", max_allowed={"HIGH": 1}), TODAY)
    assert not v.passed and {x.id for x in v.blocking} == {"A", "B"}
    v = evaluate(items, Policy(fail_on="CRITICAL", max_allowed={"MEDIUM": 2}), TODAY)   # a cap below fail_on
    assert {x.id for x in v.blocking} == {"C", "D", "E"}
    v = evaluate(items, Policy(fail_on="CRITICAL", max_allowed={"MEDIUM": 3}), TODAY)
    assert v.passed


# --------------------------------------------------------------------------- exceptions


EXC = """
[[exceptions]]
id = "CVE-2099-0001"
package = "musl"
reason = "not reachable in this image"
expires = 2099-01-01
owner = "platform"
"""


def test_an_exception_suppresses_and_is_listed_with_reason_and_expiry():
    pol = Policy(fail_on="HIGH", ignore_unfixed=True, exceptions=parse_exceptions(EXC, "x.toml"))
    v = evaluate(report("all"), pol, TODAY)
    assert "CVE-2099-0001" not in {b.id for b in v.blocking}
    [s] = [s for s in v.suppressed if s.by.startswith("exception:")]
    assert s.to_dict() == {**s.finding.item(), "by": "exception:CVE-2099-0001", "reason": "not reachable in this"
                           " image", "expires": "2099-01-01", "owner": "platform"}


def test_an_expired_exception_stops_suppressing_and_is_named():
    ex = parse_exceptions(EXC.replace("2099-01-01", "2026-11-26"), "config/scan-exceptions.toml")
    v = evaluate(report("all"), Policy(fail_on="HIGH", exceptions=ex), TODAY)       # expires today: expired
    assert "CVE-2099-0001" in {b.id for b in v.blocking}
    assert [e.to_dict()["source"] for e in v.expired] == ["config/scan-exceptions.toml#0"]
    assert v.to_dict()["expired"][0]["expires"] == "2026-11-26"
    v = evaluate(report("all"), Policy(fail_on="HIGH", exceptions=ex), date(2026, 11, 25))
    assert "CVE-2099-0001" not in {b.id for b in v.blocking} and not v.expired


def test_exception_package_purl_and_paths_narrow_the_match():
    r = report("all", "debian")
    def suppressed_by(text: str) -> set[tuple[str, str]]:
        pol = Policy(fail_on="UNKNOWN", exceptions=parse_exceptions(text, "e"))
        return {(s.finding.id, s.finding.package) for s in evaluate(r, pol, TODAY).suppressed}

    base = '[[exceptions]]\nid = "{id}"\nreason = "r"\nexpires = 2099-01-01\n'
    assert suppressed_by(base.format(id="CVE-2099-1001") + 'package = "zlib1g"\n') == set()
    assert suppressed_by(base.format(id="CVE-2099-1001") + 'package = "libssl3"\n') == {("CVE-2099-1001", "libssl3")}
    assert suppressed_by(base.format(id="GHSA-aaaa-bbbb-cccc") + 'purl = "pkg:pypi/requests"\n') == {
        ("GHSA-aaaa-bbbb-cccc", "requests")}
    assert suppressed_by(base.format(id="GHSA-aaaa-bbbb-cccc") + 'purl = "pkg:pypi/requests@9.9"\n') == set()
    assert suppressed_by(base.format(id="CVE-2099-2001") + 'paths = ["usr/lib/**/urllib3-*/METADATA"]\n') == {
        ("CVE-2099-2001", "urllib3")}
    assert suppressed_by(base.format(id="CVE-2099-2001") + 'paths = ["opt/**"]\n') == set()
    assert suppressed_by(base.format(id="github-pat") + 'paths = ["app/*.py"]\n') == {("github-pat", "")}


@pytest.mark.parametrize("text, message", [
    ('[[exceptions]]\nid = "X"\nreason = "r"\nexpires = 2099-01-01\nowner = "o"\nticket = "T-1"\n',
     "e.toml: exceptions[0].ticket: unknown key"),
    ('[[exceptions]]\nid = "X"\nexpires = 2099-01-01\n', "e.toml: exceptions[0].reason: required"),
    ('[[exceptions]]\nid = "X"\nreason = "  "\nexpires = 2099-01-01\n', "exceptions[0].reason: required"),
    ('[[exceptions]]\nid = "X"\nreason = "r"\n', "e.toml: exceptions[0].expires: required"),
    ('[[exceptions]]\nid = "X"\nreason = "r"\nexpires = "next year"\n', "exceptions[0].expires: 'next year' is"
     " not a date"),
    ('[[exceptions]]\nreason = "r"\nexpires = 2099-01-01\n', "exceptions[0].id: required"),
    ('[[exceptions]]\nid = "X"\nreason = "r"\nexpires = 2099-01-01\npurl = "npm/x"\n', "exceptions[0].purl:"),
    ('[[exceptions]]\nid = "X"\nreason = "r"\nexpires = 2099-01-01\npaths = ["a/[b"]\n', "exceptions[0].paths:"),
    ('[[exception]]\nid = "X"\n', "e.toml: exception: unknown key"),
    ('[[exceptions]\n', "e.toml: not valid TOML"),
])
def test_exceptions_file_errors_name_file_and_field(text, message):
    with pytest.raises(ConfigError) as exc:
        parse_exceptions(text, "e.toml")
    assert message in str(exc.value) and exc.value.exit_code == 2


def test_exceptions_accept_a_quoted_date():
    [e] = parse_exceptions('[[exceptions]]\nid = "X"\nreason = "r"\nexpires = "2030-02-03"\n', "e")
    assert e.expires == date(2030, 2, 3)


# --------------------------------------------------------------------------- Trivy's ignore files


def test_plain_trivyignore_semantics():
    warnings: list[str] = []
    rules = parse_trivyignore((DATA / "trivyignore").read_text(), ".trivyignore", warnings.append)
    assert [(r.id, r.expires) for r in rules] == [("CVE-2099-0002", date(2099, 12, 31)),
                                                  ("CVE-2099-0003", date(2020, 1, 1)),
                                                  ("CVE-2099-1006", None), ("github-pat", None)]
    assert len(warnings) == 1 and "exp:2099-13-01" in warnings[0]           # that line is skipped entirely
    assert all(r.kinds >= {"vulnerability", "secret"} for r in rules)


def test_trivyignore_expiry_is_midnight_utc_of_the_date():
    [rule] = parse_trivyignore("CVE-1 exp:2026-11-26\n", "f")
    assert rule.active(datetime(2026, 11, 25, 23, 59, tzinfo=timezone.utc))
    assert not rule.active(datetime(2026, 11, 26, 0, 0, 1, tzinfo=timezone.utc))


@pytest.mark.parametrize("line", ["CVE-1 exp:2026-1-05", "CVE-1 exp:26-01-05", "CVE-1 exp:", "CVE-1 exp:2026/01/05"])
def test_malformed_exp_skips_the_line(line):
    assert parse_trivyignore(line + "\n", "f") == ()


def test_trivyignore_yaml():
    rules = parse_trivyignore_yaml((DATA / "trivyignore.yaml").read_text(), "t.yaml")
    by_id = {r.id: r for r in rules}
    assert by_id["CVE-2099-0001"].statement == "accepted for the test"
    assert by_id["CVE-2099-0001"].expires == date(2099, 1, 1)
    assert by_id["github-pat"].kinds == frozenset({"secret"})
    assert by_id["GHSA-aaaa-bbbb-cccc"].purls == ("pkg:pypi/requests",)


@pytest.mark.parametrize("text, message", [
    ("vulnerabilities:\n  - paths: [a]\n", "vulnerabilities[0].id: required"),
    ("vulnerabilities:\n  - id: X\n    paths: ['a/[b']\n", "vulnerabilities[0].paths"),
    ("vulnerabilities:\n  - id: X\n    purls: ['nope']\n", "vulnerabilities[0].purls"),
    ("vulnerabilities: [\n", "not valid YAML"),
    ("- a\n", "must be a mapping"),
])
def test_trivyignore_yaml_errors(text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_trivyignore_yaml(text, "t.yaml")


def test_load_policy_reads_files_and_missing_exceptions_file_means_none(tmp_path):
    ignore = tmp_path / ".trivyignore"
    ignore.write_text("CVE-1\n")
    pol = load_policy(scan_cfg(exceptions_file=str(tmp_path / "none.toml"), trivyignore=str(ignore)))
    assert pol.exceptions == () and [r.id for r in pol.ignores] == ["CVE-1"]
    with pytest.raises(ConfigError, match="scan.trivyignore: cannot read"):
        load_policy(scan_cfg(trivyignore=str(tmp_path / "missing")))


def test_status_filter_comes_before_ignore_files_and_exceptions():
    items = [f("A", "HIGH", status="affected")]
    pol = Policy(ignore_unfixed=True, ignores=parse_trivyignore("A\n", "i"),
                 exceptions=parse_exceptions('[[exceptions]]\nid = "A"\nreason = "r"\nexpires = 2099-01-01\n', "e"))
    assert evaluate(items, pol, TODAY).suppressed[0].by == "ignore_unfixed"
    pol = Policy(ignores=pol.ignores, exceptions=pol.exceptions)
    assert evaluate(items, pol, TODAY).suppressed[0].by == "i"


# --------------------------------------------------------------------------- purl and doublestar


def test_purl_matching_as_trivy():
    pkg = purl.parse("pkg:apk/alpine/musl@1.2.4-r2?arch=aarch64&distro=3.19.1")
    assert purl.parse("pkg:apk/alpine/musl").matches(pkg)
    assert purl.parse("pkg:apk/alpine/musl@1.2.4-r2?arch=aarch64").matches(pkg)
    assert not purl.parse("pkg:apk/alpine/musl?arch=x86_64").matches(pkg)
    assert not purl.parse("pkg:apk/alpine/musl@1.2.4-r99").matches(pkg)
    assert not purl.parse("pkg:deb/alpine/musl").matches(pkg)
    with pytest.raises(purl.PurlError):
        purl.parse("apk/alpine/musl")


@pytest.mark.parametrize("pattern, path, ok", [
    ("**/METADATA", "usr/lib/x/METADATA", True), ("**/METADATA", "METADATA", True),
    ("usr/**", "usr", True), ("usr/**", "usr/a/b", True), ("usr/*", "usr/a/b", False),
    ("*.py", "a/b.py", False), ("app/?.py", "app/a.py", True), ("{a,b}/x", "b/x", True),
    ("[!a]x", "ax", False), ("[a-c]x", "bx", True), (r"a\*", "a*", True),
])
def test_doublestar(pattern, path, ok):
    assert doublestar.match(pattern, path) is ok


@pytest.mark.parametrize("pattern", ["a/[b", "{a,b", "a\\"])
def test_doublestar_invalid(pattern):
    with pytest.raises(doublestar.GlobError):
        doublestar.compile(pattern)


# --------------------------------------------------------------------------- property: threshold vs exact set

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SEVS = list(trivy.SEVERITIES)


@given(st.lists(st.tuples(st.sampled_from(SEVS), st.sampled_from(list(trivy.STATUSES))), max_size=30),
       st.sampled_from(SEVS), st.booleans())
def test_fail_on_equals_trivys_severity_set_from_that_level_up(items, fail_on, unfixed):
    found = [f(f"CVE-{i}", sev, status=status) for i, (sev, status) in enumerate(items)]
    v = evaluate(found, Policy(fail_on=fail_on, ignore_unfixed=unfixed), TODAY)
    trivy_set = set(SEVS[SEVS.index(fail_on):])            # what `--severity` must list for the same gate
    kept = [x for x in found if x.severity in trivy_set and (not unfixed or x.status == "fixed")]
    assert sorted(x.id for x in v.blocking) == sorted(x.id for x in kept)
    assert v.passed == (not kept)


@pytest.mark.parametrize("text, expected", [
    ("pkg:pypi/Django_Rest@1.0", ("pypi", "", "django-rest", "1.0", {}, "")),
    ("pkg:npm/@angular/core", ("npm", "@angular", "core", "", {}, "")),
    ("pkg:npm/@Angular/Core@1.0.0", ("npm", "@angular", "core", "1.0.0", {}, "")),
    ("pkg:npm/%40angular/core@1.0.0", ("npm", "@angular", "core", "1.0.0", {}, "")),
    ("pkg:golang/github.com/Foo/Bar@v1.0.0#sub/dir", ("golang", "github.com/foo", "bar", "v1.0.0", {}, "sub/dir")),
    ("pkg:deb/debian/OpenSSL@1.1?arch=amd64&distro=debian-12",
     ("deb", "debian", "openssl", "1.1", {"arch": "amd64", "distro": "debian-12"}, "")),
    ("pkg:maven/org.Apache/Commons-IO@2.6?Type=jar", ("maven", "org.Apache", "Commons-IO", "2.6", {"type": "jar"}, "")),
    ("pkg:generic/a+b@1?k=a+b&e=", ("generic", "", "a+b", "1", {"k": "a b"}, "")),
    ("pkg://npm/x", ("npm", "", "x", "", {}, "")),
    ("pkg:npm/x?a", ("npm", "", "x", "", {}, "")),
])
def test_purls_parse_as_trivys_packageurl_go_parses_them(text, expected):
    """The table from reading packageurl-go v0.1.3 (what Trivy 0.59.1 pins): an ignore entry written with
    other case or `_` must match where Trivy matches."""
    p = purl.parse(text)
    assert (p.type, p.namespace, p.name, p.version, p.qualifiers, p.subpath) == expected


@pytest.mark.parametrize("text", ["pkg:npm/x@1?a=1&A=2", "pkg:npm/x?1a=b", "pkg:golang/x/y@v1#/sub/./dir/",
                                  "pkg:", "npm/x", "pkg:npm", "pkg:npm/", "pkg:n*m/x"])
def test_purls_trivy_refuses_are_refused(text):
    with pytest.raises(purl.PurlError):
        purl.parse(text)


def test_an_ignore_purl_in_other_case_matches_trivys_package():
    assert purl.parse("pkg:pypi/Django_Rest").matches(purl.parse("pkg:pypi/django-rest@4.0"))
    assert purl.parse("pkg:npm/@Angular/Core?e=").matches(purl.parse("pkg:npm/%40angular/core@1.0.0"))
