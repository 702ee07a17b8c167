"""Run the container of an emitted CronJob here, as a kubelet would lay it out (no cluster in the sandbox).

What it honours: the container's command, args, workingDir and env (``value`` and ``secretKeyRef``,
``optional`` included), and its volumeMounts of ConfigMap, Secret (``items``, ``subPath``) and emptyDir
volumes. Container paths are placed under ``root`` (``/work/x`` → ``root/work/x``), except a file the
host already has at that very path: the job must then carry the same bytes. The process gets only the
container's env (plus PATH and PYTHONPATH), so a credential the manifest forgot to take from the Secret
is missing, as it would be in a pod. A Secret key the manifest asks for and the test did not give fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def documents(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(text) if d]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ConfigMap", "CronJob"}, list(kinds)
    return kinds["ConfigMap"], kinds["CronJob"]


def run(text: str, secret: dict[str, str | bytes], root: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    configmap, cronjob = documents(text)
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secret_name = None

    def place(path: str) -> Path:
        return root / path.lstrip("/")

    moved: dict[str, str] = {}     # container path -> where it is here, for env values and args
    mounts = container.get("volumeMounts", [])
    for mount in mounts:               # empty dirs first: files may be mounted inside them
        where = mount["mountPath"]
        if "emptyDir" in volumes[mount["name"]] and where != "/tmp" and not where.startswith("/tmp/"):
            place(where).mkdir(parents=True, exist_ok=True)
            moved[where] = str(place(where))

    def here(path: str) -> Path:
        mapped = _moved(path, moved)
        if mapped != path or path == "/tmp" or path.startswith("/tmp/") or Path(path).is_file():
            return Path(mapped)
        return place(path)

    for mount in mounts:
        vol = volumes[mount["name"]]
        where = mount["mountPath"]
        if "emptyDir" in vol:
            continue
        if "configMap" in vol:
            assert vol["configMap"]["name"] == configmap["metadata"]["name"], vol
            files = {k: v.encode() for k, v in configmap["data"].items()}
            optional = False
        else:
            secret_name = vol["secret"]["secretName"]
            optional = bool(vol["secret"].get("optional"))
            files = {}
            for item in vol["secret"].get("items", []):
                if item["key"] in secret:
                    value = secret[item["key"]]
                    files[item["path"]] = value.encode() if isinstance(value, str) else value
                else:
                    assert optional, f"Secret key {item['key']} asked for and not given"
        if "subPath" in mount:
            if mount["subPath"] not in files:
                assert optional, mount
                continue
            content = {"": files[mount["subPath"]]}
        else:
            content = files
        for rel, data in content.items():
            inside = f"{where}/{rel}" if rel else where
            target = here(inside)
            if target == Path(inside) and target.is_file():   # a file of this machine at that very path
                assert target.read_bytes() == data, f"{target}: the job carries other bytes than the file has"
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if here(where) != Path(where):
            moved.setdefault(where, str(here(where)))

    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    for e in container.get("env", []):
        if "value" in e:
            value = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            secret_name = secret_name or ref["name"]
            assert ref["name"] == secret_name, ref
            if ref["key"] not in secret:
                assert ref.get("optional"), f"Secret key {ref['key']} asked for and not given"
                continue
            got = secret[ref["key"]]
            value = got if isinstance(got, str) else got.decode()
        env[e["name"]] = _moved(value, moved)
    workdir = place(container["workingDir"])
    workdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable if c == "python" else c for c in container["command"]]
    args = [_moved(a, moved) for a in container.get("args", [])]
    return subprocess.run(command + args, env=env, cwd=workdir, capture_output=True, text=True, timeout=timeout)


def _moved(value: str, moved: dict[str, str]) -> str:
    for inside, here in sorted(moved.items(), key=lambda kv: -len(kv[0])):
        if value == inside or value.startswith(inside + "/"):
            return here + value[len(inside):]
    return value
