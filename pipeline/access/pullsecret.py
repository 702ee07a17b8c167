"""Kubernetes image pull secrets, pure: the Secret, the ServiceAccount patch, and the ECR refresh CronJob.

``pipeline pull-secret`` resolves the registry's credentials (as a release does) and renders:

* a ``kubernetes.io/dockerconfigjson`` Secret whose ``.dockerconfigjson`` is a docker
  config with one ``auths`` entry (``username``, ``password``, ``auth``), the form kubelet
  reads;
* with a service account: a ServiceAccount document naming the secret in
  ``imagePullSecrets`` (``kubectl apply`` merges the list by name, other secrets stay) and
  the equivalent strategic-merge patch for ``kubectl patch``;
* for ECR, whose tokens expire after 12 hours: a CronJob (with its ServiceAccount, Role and
  RoleBinding) that fetches a new token every 8 hours and applies the Secret again. The
  token goes from ``aws ecr get-login-password`` through shell builtins into a file in a
  memory volume; it is on no command line.

The builders are pure and print nothing; :func:`make` resolves the registry's credentials (as a
release does) and renders the YAML, :func:`write_private` puts it in a 0600 file and :func:`apply`
hands it to ``kubectl`` on stdin. The CLI decides where it goes.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline import log
from pipeline.ci_files import yamltext
from pipeline.errors import UsageError
from pipeline.tools.registry import DOCKER_HUB_HOSTS, DOCKER_HUB_KEY, Credentials

if TYPE_CHECKING:
    from pipeline.config import Config

SECRET_TYPE = "kubernetes.io/dockerconfigjson"
MANAGED_BY = {"app.kubernetes.io/managed-by": "pipeline"}
REFRESH_SCHEDULE = "0 */8 * * *"     # well inside the 12-hour token lifetime, with two spare runs
AWS_CLI_IMAGE = "public.ecr.aws/aws-cli/aws-cli:latest"
KUBECTL_IMAGE = "registry.k8s.io/kubectl:v1.32.0"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_name(value: str, what: str, *, label: bool = False) -> str:
    """A Kubernetes object name (RFC 1123 subdomain; namespaces: a label). Raises ValueError."""
    if not (_DNS_LABEL if label else _DNS_SUBDOMAIN).match(value):
        kind = "a DNS label (lowercase letters, digits, -; at most 63)" if label else \
            "a DNS subdomain (lowercase letters, digits, - and .)"
        raise ValueError(f"{what} '{value}' is not {kind}")
    return value


def server_key(host: str) -> str:
    """The ``auths`` key kubelet matches images against: Docker Hub's canonical key, else ``host[:port]``."""
    return DOCKER_HUB_KEY if host in DOCKER_HUB_HOSTS else host


def docker_config(host: str, creds: Credentials) -> dict[str, Any]:
    """``{"auths": {server: {"username", "password", "auth"}}}`` for one registry."""
    if creds.identity_token and not creds.password:
        raise ValueError("the docker config holds an identity token for this registry, which Kubernetes cannot use;"
                         " configure a username and password/token (username_env/password_env)")
    auth = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    log.register_secret(auth)
    return {"auths": {server_key(host): {"username": creds.username, "password": creds.password, "auth": auth}}}


def secret(name: str, namespace: str, config: Mapping[str, Any], *, registry: str = "") -> dict[str, Any]:
    raw = json.dumps(config, separators=(",", ":")).encode()
    encoded = base64.b64encode(raw).decode()
    log.register_secret(encoded)
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)}
    if registry:
        meta["annotations"] = {"pipeline/registry": registry}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": SECRET_TYPE,
            "data": {".dockerconfigjson": encoded}}


def service_account_patch(secret_name: str) -> dict[str, Any]:
    """The strategic-merge patch for ``kubectl patch serviceaccount``: adds one pull secret."""
    return {"imagePullSecrets": [{"name": secret_name}]}


def service_account(name: str, namespace: str, secret_name: str) -> dict[str, Any]:
    """A ServiceAccount document with the pull secret; ``kubectl apply`` merges ``imagePullSecrets`` by name."""
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace},
            **service_account_patch(secret_name)}


REFRESH_SCRIPT = """\
set -eu
TOKEN="$(aws ecr get-login-password --region "$AWS_REGION")"
AUTH="$(printf 'AWS:%s' "$TOKEN" | base64 | tr -d '\\n')"
CONFIG="$(printf '{"auths":{"%s":{"username":"AWS","password":"%s","auth":"%s"}}}' "$REGISTRY" "$TOKEN" "$AUTH" | base64 | tr -d '\\n')"
printf '{"apiVersion":"v1","kind":"Secret","type":"kubernetes.io/dockerconfigjson","metadata":{"name":"%s","namespace":"%s","labels":{"app.kubernetes.io/managed-by":"pipeline"}},"data":{".dockerconfigjson":"%s"}}' "$SECRET_NAME" "$NAMESPACE" "$CONFIG" > /work/secret.json
"""


@dataclass(frozen=True)
class RefreshOptions:
    region: str
    schedule: str = REFRESH_SCHEDULE
    role_arn: str | None = None                # IRSA: the IAM role the refresher assumes (ecr:GetAuthorizationToken)
    aws_cli_image: str = AWS_CLI_IMAGE
    kubectl_image: str = KUBECTL_IMAGE


def ecr_refresh(secret_name: str, namespace: str, host: str, opts: RefreshOptions) -> list[dict[str, Any]]:
    """ServiceAccount, Role, RoleBinding and CronJob that re-create the Secret from a fresh ECR token."""
    job = f"{secret_name}-refresh"[:52]  # CronJob names: at most 52 characters
    job = job.rstrip("-.")
    sa_meta: dict[str, Any] = {"name": job, "namespace": namespace, "labels": dict(MANAGED_BY)}
    if opts.role_arn:
        sa_meta["annotations"] = {"eks.amazonaws.com/role-arn": opts.role_arn}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": job, "namespace": namespace, "labels": dict(MANAGED_BY)},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret_name],
                       "verbs": ["get", "patch", "update"]},
                      {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": job, "namespace": namespace, "labels": dict(MANAGED_BY)},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": job},
               "subjects": [{"kind": "ServiceAccount", "name": job, "namespace": namespace}]}
    env = [{"name": "AWS_REGION", "value": opts.region},
           {"name": "REGISTRY", "value": server_key(host)},
           {"name": "SECRET_NAME", "value": secret_name},
           {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    pod = {"serviceAccountName": job, "restartPolicy": "OnFailure",
           "volumes": [{"name": "work", "emptyDir": {"medium": "Memory"}}],
           "initContainers": [{"name": "ecr-token", "image": opts.aws_cli_image,
                               "command": ["/bin/sh", "-c", REFRESH_SCRIPT], "env": env,
                               "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
           "containers": [{"name": "apply", "image": opts.kubectl_image,
                           "args": ["apply", "-f", "/work/secret.json"],
                           "volumeMounts": [{"name": "work", "mountPath": "/work", "readOnly": True}]}]}
    cron = {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": job, "namespace": namespace, "labels": dict(MANAGED_BY)},
            "spec": {"schedule": opts.schedule, "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 1,
                     "failedJobsHistoryLimit": 3,
                     "jobTemplate": {"spec": {"backoffLimit": 3, "template": {"spec": pod}}}}}
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": sa_meta}
    return [sa, role, binding, cron]


def check_names(name: str, namespace: str, service_account_name: str | None) -> None:
    """The Kubernetes names a pull secret is written under. Raises ValueError naming the bad argument."""
    check_name(name, "--name")
    check_name(namespace, "--namespace", label=True)
    if service_account_name:
        check_name(service_account_name, "--service-account")


def documents(*, name: str, namespace: str, host: str, creds: Credentials, registry: str = "",
              service_account_name: str | None = None, refresh: RefreshOptions | None = None) -> list[dict[str, Any]]:
    check_names(name, namespace, service_account_name)
    docs = [secret(name, namespace, docker_config(host, creds), registry=registry)]
    if service_account_name:
        docs.append(service_account(service_account_name, namespace, name))
    if refresh is not None:
        docs += ecr_refresh(name, namespace, host, refresh)
    return docs


def render(docs: list[dict[str, Any]], *, registry: str, refresh: bool) -> str:
    header = [f"Image pull secret for registry '{registry}', generated by `pipeline pull-secret`.",
              "It holds a credential: keep this file private (0600) and out of version control."]
    if refresh:
        header.append("ECR tokens expire after 12 hours: the CronJob below fetches a new one every 8 hours"
                      " (its service account needs ecr:GetAuthorizationToken, e.g. through IRSA).")
    return yamltext.dump_all(docs, header="\n".join(header))


@dataclass(frozen=True)
class PullSecret:
    text: str                      # the YAML (it holds the credential)
    registry: str
    host: str
    documents: int
    refresh: bool                  # an ECR refresh CronJob is part of it


def make(cfg: Config, env: Mapping[str, str], *, registry: str, name: str, namespace: str,
         service_account_name: str | None = None, no_refresh: bool = False, role_arn: str | None = None,
         schedule: str | None = None) -> PullSecret:
    """The pull secret for one configured registry, from the credentials a release would use."""
    from pipeline.access.registries import Access, ecr_region

    try:
        check_names(name, namespace, service_account_name)   # before any credential is looked up
    except ValueError as exc:
        raise UsageError(f"pipeline pull-secret: {exc}") from None
    reg = cfg.registry(registry)
    if reg.auth == "none":
        raise UsageError(f"pipeline pull-secret: registry '{reg.name}' has auth = \"none\": nodes pull without a"
                         " secret")
    refresh = None
    if reg.is_ecr and reg.auth == "ecr" and not no_refresh:
        refresh = RefreshOptions(region=ecr_region(reg, env), role_arn=role_arn, schedule=schedule or REFRESH_SCHEDULE)
    with Access(cfg, env) as access:
        creds = access.credentials(reg)
    if creds is None:
        raise UsageError(f"pipeline pull-secret: no credentials for registry '{reg.name}' ({reg.host}) in the docker"
                         " config; run 'pipeline login' first or configure username_env/password_env")
    try:
        docs = documents(name=name, namespace=namespace, host=reg.host, creds=creds, registry=reg.name,
                         service_account_name=service_account_name, refresh=refresh)
    except ValueError as exc:
        raise UsageError(f"pipeline pull-secret: {exc}") from None
    return PullSecret(render(docs, registry=reg.name, refresh=refresh is not None), reg.name, reg.host, len(docs),
                      refresh is not None)


def apply(secret_yaml: str, *, name: str, namespace: str, service_account_name: str | None = None) -> None:
    """``kubectl apply -f -`` (the secret on stdin), then the service account patch."""
    from pipeline.tools import login as tools

    tools.kubectl_run(tools.kubectl_apply_argv(), input=secret_yaml, what=f"kubectl apply (pull secret {name})")
    if service_account_name:
        patch = json.dumps(service_account_patch(name))
        tools.kubectl_run(tools.kubectl_patch_sa_argv(service_account_name, namespace, patch),
                          what=f"kubectl patch serviceaccount {service_account_name}")


__all__ = ["AWS_CLI_IMAGE", "KUBECTL_IMAGE", "REFRESH_SCHEDULE", "RefreshOptions", "check_name", "docker_config",
           "documents", "ecr_refresh", "render", "secret", "server_key", "service_account",
           "service_account_patch", "PullSecret", "make", "apply"]
