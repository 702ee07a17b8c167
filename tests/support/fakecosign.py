"""A fake ``cosign`` executable for unit tests: it runs through the real proc chokepoint.

It signs and verifies the way the release uses cosign (offline; specs/cosign-offline.md), with a
fake signature scheme: ``sign(data, key) = base64("fakesig:" + sha256(data) + ":" + key)``.

* ``sign-blob --output-signature S FILE``: S gets the signature of FILE's bytes;
* ``attest --no-upload --type T --predicate P REF@DIGEST``: prints the DSSE envelope of an in-toto
  v0.1 statement (subject = REF's repository and DIGEST, predicateType = T's URI);
* ``verify --local-image DIR`` / ``verify-attestation --local-image --type T DIR``: reads the
  layout's ``index.json`` (subject, ``…/sigs``, ``…/atts``) and passes when one artifact is signed by
  the verifying key over a payload that names the subject's digest;
* ``generate-key-pair``, ``public-key``: write fake key files.

Controls are set with ``fake_cosign.control(NAME=value)``. The signing key is ``FAKE_COSIGN_KEY`` (default
``ours``), the verifying key ``FAKE_COSIGN_VERIFY_KEY``
(default ``ours``). Every call is recorded (argv, the COSIGN_PASSWORD and DOCKER_CONFIG it was given).
``FAKE_COSIGN_FAIL=sign|attest`` makes that command fail echoing the password on stderr (to prove
the scrubbing); ``FAKE_COSIGN_VERIFY=fail`` makes every verify say no.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import sys
import textwrap

import pytest

from pipeline.tools import cosign

PREDICATES = dict(cosign.PREDICATE_TYPES)


def fake_sign(data: bytes, key: str = "ours") -> str:
    return base64.b64encode(f"fakesig:{hashlib.sha256(data).hexdigest()}:{key}".encode()).decode()


def pae(payload_type: str, payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def fake_envelope(repo_ref: str, digest: str, predicate_type: str, predicate: object, key: str = "ours") -> bytes:
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": predicate_type,
                            "subject": [{"name": repo_ref, "digest": {"sha256": digest.split(":", 1)[1]}}],
                            "predicate": predicate}, separators=(",", ":")).encode()
    kind = "application/vnd.in-toto+json"
    return json.dumps({"payloadType": kind, "payload": base64.b64encode(statement).decode(),
                       "signatures": [{"keyid": "", "sig": fake_sign(pae(kind, statement), key)}]},
                      separators=(",", ":")).encode()


FAKE_COSIGN = textwrap.dedent("""\
    #!{python}
    import base64, hashlib, json, os, sys
    os.environ["FAKE_COSIGN_STATE"] = {state!r}   # the tool gets a minimal environment: the path is baked in,
    try:                                            # and a test's controls (FAKE_COSIGN_*) come from a file
        os.environ.update(json.load(open(os.path.join({state!r}, "controls.json"))))
    except OSError:
        pass
    sys.path.insert(0, {support!r})
    from fakecosign_impl import main
    sys.exit(main(sys.argv[1:]))
""")

IMPL = r'''    import base64, hashlib, json, os, sys

    PREDICATES = json.load(open(os.path.join(os.path.dirname(__file__), "predicates.json")))

    def sign(data, key):
        return base64.b64encode(("fakesig:" + hashlib.sha256(data).hexdigest() + ":" + key).encode()).decode()

    def pae(kind, payload):
        return b"DSSEv1 %d %s %d %s" % (len(kind), kind.encode(), len(payload), payload)

    def opt(argv, name):
        return argv[argv.index(name) + 1] if name in argv else None

    def blob(layout, digest):
        return open(os.path.join(layout, "blobs", *digest.split(":", 1)), "rb").read()

    def entries(layout):
        index = json.load(open(os.path.join(layout, "index.json")))
        return {(m.get("annotations") or {}).get("kind"): m for m in index.get("manifests") or []}

    def verify(argv, attest):
        layout = argv[-1]
        if os.environ.get("FAKE_COSIGN_VERIFY") == "fail":
            sys.stderr.write("Error: no matching signatures: invalid signature\n")
            return 12
        key = os.environ.get("FAKE_COSIGN_VERIFY_KEY", "ours")
        found = entries(layout)
        subject = found.get("dev.cosignproject.cosign/image") or found.get("dev.cosignproject.cosign/imageIndex")
        art = found.get("dev.cosignproject.cosign/atts" if attest else "dev.cosignproject.cosign/sigs")
        if subject is None or art is None:
            sys.stderr.write("Error: no signatures found\n")
            return 10
        manifest = json.loads(blob(layout, art["digest"]))
        for layer in manifest.get("layers") or []:
            data = blob(layout, layer["digest"])
            if attest:
                env = json.loads(data)
                statement = json.loads(base64.b64decode(env["payload"]))
                want = PREDICATES.get(opt(argv, "--type"), opt(argv, "--type"))
                ok = (statement.get("predicateType") == want
                      and statement["subject"][0]["digest"]["sha256"] == subject["digest"].split(":", 1)[1]
                      and env["signatures"][0]["sig"] == sign(pae(env["payloadType"], base64.b64decode(env["payload"])), key))
                if ok:
                    print(json.dumps(env))
                    return 0
            else:
                payload = json.loads(data)
                ok = (payload["critical"]["image"]["docker-manifest-digest"] == subject["digest"]
                      and (layer.get("annotations") or {}).get("dev.cosignproject.cosign/signature") == sign(data, key))
                if ok:
                    print(json.dumps([payload]))
                    return 0
        sys.stderr.write("Error: no matching signatures: invalid signature\n")
        return 12

    def main(argv):
        state = os.environ["FAKE_COSIGN_STATE"]
        with open(os.path.join(state, "calls.jsonl"), "a") as fh:
            fh.write(json.dumps({"argv": argv, "password": os.environ.get("COSIGN_PASSWORD"),
                                 "docker_config": os.environ.get("DOCKER_CONFIG")}) + "\n")
        cmd = argv[0]
        key = os.environ.get("FAKE_COSIGN_KEY", "ours")
        if cmd in ("sign-blob", "attest") and os.environ.get("FAKE_COSIGN_FAIL") == ("sign" if cmd == "sign-blob" else cmd):
            sys.stderr.write("Error: signing: decrypt with " + os.environ.get("COSIGN_PASSWORD", "") + " failed\n")
            return 1
        if cmd == "sign-blob":
            data = open(argv[-1], "rb").read()
            open(opt(argv, "--output-signature"), "w").write(sign(data, key) + "\n")
            return 0
        if cmd == "attest":
            ref = argv[-1]
            repo, _, digest = ref.partition("@")
            uri = PREDICATES.get(opt(argv, "--type"), opt(argv, "--type"))
            predicate = json.load(open(opt(argv, "--predicate")))
            statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": uri,
                                    "subject": [{"name": repo, "digest": {"sha256": digest.split(":", 1)[1]}}],
                                    "predicate": predicate}, separators=(",", ":")).encode()
            kind = "application/vnd.in-toto+json"
            print(json.dumps({"payloadType": kind, "payload": base64.b64encode(statement).decode(),
                              "signatures": [{"keyid": "", "sig": sign(pae(kind, statement), key)}]},
                             separators=(",", ":")))
            return 0
        if cmd == "verify":
            return verify(argv, False)
        if cmd == "verify-attestation":
            return verify(argv, True)
        if cmd == "generate-key-pair":
            prefix = opt(argv, "--output-key-prefix")
            open(prefix + ".key", "w").write("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nFAKE\n")
            open(prefix + ".pub", "w").write("-----BEGIN PUBLIC KEY-----\nFAKE\n-----END PUBLIC KEY-----\n")
            return 0
        if cmd == "public-key":
            open(opt(argv, "--outfile"), "w").write("-----BEGIN PUBLIC KEY-----\nDERIVED\n-----END PUBLIC KEY-----\n")
            return 0
        return 2
'''


@pytest.fixture
def fake_cosign(tmp_path, monkeypatch):
    """A fake cosign first on PATH; cosign.installed_major() says 2."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    (bin_dir / "fakecosign_impl.py").write_text(textwrap.dedent(IMPL))
    (bin_dir / "predicates.json").write_text(json.dumps(PREDICATES))
    exe = bin_dir / "cosign"
    exe.write_text(FAKE_COSIGN.format(python=sys.executable, support=str(bin_dir), state=str(state)))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(cosign, "installed_major", lambda: 2)

    class Fake:
        dir = state

        def calls(self) -> list[dict]:
            path = state / "calls.jsonl"
            return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []

        def commands(self) -> list[str]:
            return [c["argv"][0] for c in self.calls()]

        def control(self, **settings: str) -> None:
            """``FAKE_COSIGN_*`` settings for the next calls (cosign's environment holds nothing of ours)."""
            path = state / "controls.json"
            current = json.loads(path.read_text()) if path.exists() else {}
            path.write_text(json.dumps({**current, **settings}))

    return Fake()
