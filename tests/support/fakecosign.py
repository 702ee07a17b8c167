"""A fake ``cosign`` executable for unit tests: it runs through the real proc chokepoint.

It records every call (argv, the COSIGN_PASSWORD it was given, DOCKER_CONFIG) and keeps a tiny
"registry" of markers: ``sign``/``attest`` of a reference make ``verify``/``verify-attestation``
of it pass. ``FAKE_COSIGN_FAIL=sign|attest`` makes that command fail echoing the password on
stderr (to prove the scrubbing); ``FAKE_COSIGN_VERIFY=fail`` makes every verify say no.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import textwrap

import pytest

from pipeline.tools import cosign

FAKE_COSIGN = textwrap.dedent("""\
    #!{python}
    import json, os, sys, hashlib
    argv = sys.argv[1:]
    state = os.environ["FAKE_COSIGN_STATE"]
    with open(os.path.join(state, "calls.jsonl"), "a") as fh:
        fh.write(json.dumps({{"argv": argv, "password": os.environ.get("COSIGN_PASSWORD"),
                             "docker_config": os.environ.get("DOCKER_CONFIG")}}) + "\\n")
    cmd, ref = argv[0], argv[-1]
    marker = os.path.join(state, hashlib.sha256((cmd.replace("verify-attestation", "attest")
                                                 .replace("verify", "sign") + ref).encode()).hexdigest())
    if cmd in ("sign", "attest"):
        if os.environ.get("FAKE_COSIGN_FAIL") == cmd:
            sys.stderr.write("Error: signing " + ref + ": decrypt with " + os.environ.get("COSIGN_PASSWORD", "") +
                             " failed\\n")
            sys.exit(1)
        open(marker, "w").close()
        sys.exit(0)
    if cmd in ("verify", "verify-attestation"):
        if os.path.exists(marker) and os.environ.get("FAKE_COSIGN_VERIFY") != "fail":
            print(json.dumps([{{"critical": {{"image": {{"docker-manifest-digest": ref.split("@")[-1]}}}}}}]))
            sys.exit(0)
        sys.stderr.write("Error: no matching signatures: invalid signature\\n")
        sys.exit(12)
    if cmd == "generate-key-pair":
        prefix = argv[argv.index("--output-key-prefix") + 1]
        open(prefix + ".key", "w").write("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\\nFAKE\\n")
        open(prefix + ".pub", "w").write("-----BEGIN PUBLIC KEY-----\\nFAKE\\n-----END PUBLIC KEY-----\\n")
        sys.exit(0)
    if cmd == "public-key":
        open(argv[argv.index("--outfile") + 1], "w").write("-----BEGIN PUBLIC KEY-----\\nDERIVED\\n-----END PUBLIC KEY-----\\n")
        sys.exit(0)
    sys.exit(2)
""")


@pytest.fixture
def fake_cosign(tmp_path, monkeypatch):
    """A fake cosign first on PATH; cosign.installed_major() says 2."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    exe = bin_dir / "cosign"
    exe.write_text(FAKE_COSIGN.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_COSIGN_STATE", str(state))
    monkeypatch.setattr(cosign, "installed_major", lambda: 2)

    class Fake:
        dir = state

        def calls(self) -> list[dict]:
            path = state / "calls.jsonl"
            return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []

        def commands(self) -> list[str]:
            return [c["argv"][0] for c in self.calls()]

        def mark_signed(self, cmd: str, ref: str) -> None:
            (state / hashlib.sha256((cmd + ref).encode()).hexdigest()).touch()

    return Fake()
