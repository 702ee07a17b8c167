"""``pipeline rescan --emit-cronjob``: the rescan as a Kubernetes CronJob, with the files it reads.

Three documents, for ``kubectl apply -f``:

* a **ConfigMap** with every file the rescan reads: the config, ``scan.exceptions_file``,
  ``scan.trivyignore``, each ``scan.vex`` document and a public key file. A path relative to where
  the command runs lands under the job's working directory ``/work`` at the same relative path, an
  absolute path at that path, so the config is carried as written;
* a **CronJob** at ``[rescan] schedule`` (UTC): ``python -m pipeline rescan`` in ``[rescan] image`` (or
  ``--image``), an image with this package, Trivy and (for ``--attest``) cosign. ``/work``, ``/tmp`` and
  any absolute ``scan.cache_dir`` are empty dirs, so the root file system stays read-only; the job runs
  as a non-root user, never twice at once, and is not retried: a failing rescan is a verdict to see, and
  every request in it already retries under the one policy;
* no Secret: its *keys* are listed in the header, with the ``kubectl create secret`` command that makes
  it. Each credential variable the config names (``username_env``/``password_env``, the defaults of
  ``auth = "ghcr"``/``"dockerhub"``, the AWS variables of ``auth = "ecr"``, the signing key's password)
  comes from that Secret by ``secretKeyRef``; a signing key file (with ``--attest``) and a docker
  config (``auth = "docker"``) are mounted from it. No secret value is ever written.

The release history in ``dist/`` is not there: push times and the release-time verdicts come from the
registries (``new`` findings are then not marked).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.ci_files import yamltext
from pipeline.config import Config, RegistryConfig
from pipeline.errors import ConfigError, UsageError
from pipeline.refs import parse_key_ref
from pipeline.tools.registry import loopback_host

WORKDIR = PurePosixPath("/work")
SECRET_DIR = PurePosixPath("/var/run/secrets/pipeline")
#: a ConfigMap holds at most 1 MiB (etcd's object limit), names and keys included
CONFIGMAP_LIMIT = 1024 * 1024
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION")
FILE_KEYS = ("cosign.key", "config.json")
_KEY = re.compile(r"[^-._a-zA-Z0-9]+")
_NAME = re.compile(r"[^a-z0-9-]+")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _dns_name(text: str) -> str:
    name = _NAME.sub("-", text.lower()).strip("-")[:52].strip("-")
    return name or "pipeline-rescan"


def _in_pod(path: Path) -> PurePosixPath:
    """Where a config path is in the pod: a relative one under /work as here, an absolute one where it is
    (the config is carried as written, so it must find its files at the paths it names)."""
    raw = Path(path)
    return PurePosixPath(raw.as_posix()) if raw.is_absolute() else WORKDIR / PurePosixPath(raw.as_posix())


def _key(where: PurePosixPath, taken: set[str]) -> str:
    """A ConfigMap key for the file at ``where`` (``[-._a-zA-Z0-9]``, at most 253), unique in ``taken``."""
    import hashlib

    key = (_KEY.sub("-", str(where).lstrip("/")).strip("-.") or "file")[-200:].lstrip("-.")
    if key in taken:
        key = f"{key}-{hashlib.sha256(str(where).encode()).hexdigest()[:8]}"
    taken.add(key)
    return key


def files_to_carry(cfg: Config, config_path: Path) -> list[tuple[str, Path]]:
    """(what, path) of every file a rescan reads, the config first; a named file that is missing is an error."""
    wanted: list[tuple[str, str | None, bool]] = [
        ("the config", str(config_path), True),
        ("scan.exceptions_file", cfg.scan.exceptions_file, False),   # the default file is optional
        ("scan.trivyignore", cfg.scan.trivyignore, True),
        *((f"scan.vex[{i}]", v, True) for i, v in enumerate(cfg.scan.vex)),
    ]
    if cfg.sign.public_key:
        ref = parse_key_ref(cfg.sign.public_key, public=True)
        if ref.kind == "file":
            wanted.append(("sign.public_key", ref.value, True))
    out: list[tuple[str, Path]] = []
    for what, value, required in wanted:
        if not value:
            continue
        path = Path(value)
        if path.is_file():
            out.append((what, path))
        elif required:
            raise ConfigError(f"{what}: {value} is not a file; the CronJob would carry it in its ConfigMap")
    return out


def _credential_env(reg: RegistryConfig) -> list[str]:
    pair = reg.credential_env
    if pair:
        return list(pair)
    if reg.is_ecr:
        return list(AWS_ENV)
    return []


def emit(cfg: Config, config_path: Path, *, image: str | None, namespace: str | None,
         secret: str, registries: Sequence[str], attest: bool, name: str | None = None) -> str:
    """The ConfigMap and CronJob as YAML (see the module docstring)."""
    for flag, value in (("--namespace", namespace), ("--secret", secret)):
        if value is not None and not _DNS_LABEL.match(value):
            raise UsageError(f"pipeline rescan --emit-cronjob {flag} {value}: not a Kubernetes name (lower-case"
                             " letters, digits and '-', at most 63, starting and ending alphanumeric)")
    image = image or cfg.rescan.image
    if not image:
        raise UsageError("pipeline rescan --emit-cronjob: name the image the job runs: --image REF or [rescan] image"
                         " (one with this package, trivy and, for --attest, cosign)")
    from pipeline.access.registries import select

    job = _dns_name(name or f"rescan-{cfg.image.name}")
    carried = files_to_carry(cfg, config_path)
    data: dict[str, str] = {}
    mounts: list[dict[str, Any]] = []
    taken: set[str] = set()
    placed: set[str] = set()
    for what, path in carried:
        where = _in_pod(path)
        if str(where) in placed:           # one file named by two settings: mounted once
            continue
        placed.add(str(where))
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{what}: {path}: cannot be read as text ({exc})") from None
        key = _key(where, taken)
        data[key] = text
        mounts.append({"name": "files", "mountPath": str(where), "subPath": key, "readOnly": True})
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    if size > CONFIGMAP_LIMIT:
        raise ConfigError(f"the files the rescan reads come to {size} bytes, more than a ConfigMap holds (1 MiB);"
                          " shorten the exceptions or VEX files")

    env: list[dict[str, Any]] = [{"name": "HOME", "value": str(WORKDIR)},
                                 {"name": "PIPELINE_LOG_FORMAT", "value": "json"}]
    secret_keys: list[str] = []
    volumes: list[dict[str, Any]] = [{"name": "files", "configMap": {"name": f"{job}-files"}},
                                     {"name": "work", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    writable = [{"name": "work", "mountPath": str(WORKDIR)}, {"name": "tmp", "mountPath": "/tmp"}]

    def from_secret(var: str, optional: bool = False) -> None:
        if any(e["name"] == var for e in env):
            return
        env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": var,
                                                                 **({"optional": True} if optional else {})}}})
        secret_keys.append(var + (" (optional)" if optional else ""))

    chosen = select(cfg, list(registries) or None)
    for reg in chosen:
        for var in _credential_env(reg):
            from_secret(var, optional=reg.is_ecr)      # on EKS the pod's role can stand in for keys
    if any(reg.auth == "docker" for reg in chosen):
        volumes.append({"name": "docker-config", "secret": {"secretName": secret, "optional": True,
                                                             "items": [{"key": "config.json", "path": "config.json"}]}})
        mounts.append({"name": "docker-config", "mountPath": str(SECRET_DIR / "docker"), "readOnly": True})
        env.append({"name": "DOCKER_CONFIG", "value": str(SECRET_DIR / "docker")})
        secret_keys.append("config.json (optional: a docker config for the auth = \"docker\" registries)")
    if attest:
        if cfg.sign.keyless or not cfg.sign.key:
            raise UsageError("pipeline rescan --emit-cronjob --attest: a CronJob has no CI job's OIDC identity to"
                             " sign keyless with; configure [sign] key")
        ref = parse_key_ref(cfg.sign.key)
        if ref.kind == "file":
            volumes.append({"name": "signing-key", "secret": {"secretName": secret,
                                                               "items": [{"key": "cosign.key", "path": "cosign.key"}]}})
            mounts.append({"name": "signing-key", "mountPath": str(_in_pod(Path(ref.value))),
                           "subPath": "cosign.key", "readOnly": True})
            secret_keys.append("cosign.key (the signing key file)")
        elif ref.kind == "env":
            from_secret(ref.value)
        if cfg.sign.password_env:
            from_secret(cfg.sign.password_env)
    cache = cfg.scan.cache_dir
    if cache and Path(cache).is_absolute() and not PurePosixPath(cache).is_relative_to("/tmp") \
            and not PurePosixPath(cache).is_relative_to(WORKDIR):
        volumes.append({"name": "trivy-cache", "emptyDir": {}})
        writable.append({"name": "trivy-cache", "mountPath": cache})

    config_in_pod = str(_in_pod(config_path))
    args = ["-m", "pipeline", "rescan", "--config", config_in_pod]
    for r in registries:
        args += ["--registry", r]
    if attest:
        args.append("--attest")
    meta: dict[str, Any] = {"name": job, "labels": {"app.kubernetes.io/name": "pipeline-rescan",
                                                    "app.kubernetes.io/instance": job}}
    if namespace:
        meta["namespace"] = namespace
    container = {
        "name": "rescan", "image": image, "command": ["python"], "args": args, "workingDir": str(WORKDIR),
        "env": env, "volumeMounts": writable + mounts,
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
    }
    cronjob = {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
        "spec": {"schedule": cfg.rescan.schedule, "timeZone": "Etc/UTC", "concurrencyPolicy": "Forbid",
                 "startingDeadlineSeconds": 3600, "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 5,
                 "jobTemplate": {"spec": {"backoffLimit": 0, "activeDeadlineSeconds": 3 * 3600, "template": {
                     "metadata": {"labels": dict(meta["labels"])},
                     "spec": {"restartPolicy": "Never", "securityContext": {"runAsUser": 65532, "runAsGroup": 65532,
                                                                            "fsGroup": 65532},
                              "containers": [container], "volumes": volumes}}}}},
    }
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": f"{job}-files", **{k: v for k, v in meta.items() if k != "name"}},
                 "data": data}
    keys = [k.split(" ", 1)[0] for k in secret_keys]
    literal = " ".join(f"--from-literal={k}=…" for k in keys if k not in FILE_KEYS)
    files = " ".join(f"--from-file={k}=PATH" for k in keys if k in FILE_KEYS)
    header = [f"pipeline rescan as a Kubernetes CronJob ({cfg.rescan.schedule}, UTC), for kubectl apply -f.",
              f"It reads Secret '{secret}'" + (f" in namespace {namespace}" if namespace else "")
              + (", keys: " + ", ".join(secret_keys) if secret_keys else " (no keys needed)") + ".",
              ]
    if secret_keys:
        header.append(f"  kubectl create secret generic {secret} {' '.join(x for x in (literal, files) if x)}"
                      + (f" -n {namespace}" if namespace else ""))
    header.append(f"The image ({image}) needs python -m pipeline, trivy" + (" and cosign" if attest else "") + ".")
    for reg in chosen:
        if loopback_host(reg.host):
            header.append(f"Note: registry {reg.name} ({reg.url}) is on this machine's loopback; in the pod that"
                          " is the pod itself: give it a url the cluster reaches.")
    return yamltext.dump_all([configmap, cronjob], header="\n".join(header))

