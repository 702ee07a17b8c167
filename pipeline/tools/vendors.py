"""Vendor registry APIs where the OCI API is not enough: push times and deletes (specs/lifecycle.md §4).

The OCI distribution API has no push time and, on some registries, no usable delete. Each
vendor that has one gets a small adapter with the same three verbs:

* ``push_times(repo) -> {digest: VendorImage}``: what the vendor knows per manifest digest
  (push time, tags, whether it can list untagged manifests);
* ``can_delete(repo) -> str | None``: ``None`` when deletes will work, else the reason;
* ``delete(repo, digest, tags)``: delete one image (the digest and every tag on it).

Vendors: **ECR** (``aws ecr describe-images`` / ``batch-delete-image``: imagePushedAt),
**GHCR** (GitHub REST Packages API: version ``created_at``; a version is a digest; deletes need a
classic PAT with ``delete:packages``), **Docker Hub** (Hub API tags: ``tag_last_pushed``; tags are
deleted through the Hub API, then the untagged manifest by digest, as the registry API refuses
tagged ones), **Harbor** (``/api/v2.0`` artifacts: ``push_time``; deletes through the OCI API).
Every HTTP call runs under the one retry policy; errors are :class:`VendorError` (an InfraError
that names the registry and says whether it is temporary).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pipeline import lazy, log, retry
from pipeline.errors import InfraError
from pipeline.times import parse_time
from pipeline.tools import proc
from pipeline.tools.ecr import EcrClient, EcrError, aws_env, have_boto3
from pipeline.tools.registry import Credentials, NotFound, Registry, RegistryError

if TYPE_CHECKING:
    import httpx
else:
    httpx = lazy("httpx")


GITHUB_API = "https://api.github.com"
HUB_API = "https://hub.docker.com"


class VendorError(InfraError):
    def __init__(self, registry: str, message: str, *, status: int | None = None, temporary: bool = False,
                 retry_after: float | None = None) -> None:
        message = " ".join(log.scrub(message).split())
        super().__init__(f"registry {registry}: {message}")
        self.detail = message
        self.status = status
        self.temporary = temporary
        self.retry_after = retry_after


@dataclass(frozen=True)
class VendorImage:
    digest: str
    pushed_at: datetime | None
    tags: tuple[str, ...] = ()
    version_id: str | None = None        # GHCR package version id


def host_kind(host: str, auth: str = "docker") -> str:
    """The vendor API a registry host implies (``distribution`` when none)."""
    h = host.lower().split(":", 1)[0]
    if auth == "ecr" or (".dkr.ecr." in h and h.endswith(".amazonaws.com")) or h.endswith(".amazonaws.com.cn"):
        return "ecr"
    if h == "ghcr.io":
        return "ghcr"
    if h in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        return "dockerhub"
    return "distribution"


class _Http:
    """httpx under the retry policy: 429/5xx/transport errors are temporary."""

    def __init__(self, registry: str, policy: retry.RetryPolicy, transport: httpx.BaseTransport | None) -> None:
        self.registry = registry
        self.policy = policy
        self.client = httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), transport=transport,
                                   headers={"User-Agent": "pipeline"}, follow_redirects=True)

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, url: str, *, what: str, ok: tuple[int, ...] = (), **kw: Any) -> httpx.Response:
        def go() -> httpx.Response:
            try:
                r = self.client.request(method, url, **kw)
            except httpx.HTTPError as exc:
                raise VendorError(self.registry, f"{what}: {type(exc).__name__}", temporary=True) from None
            if r.status_code < 400 or r.status_code in ok:
                return r
            temporary = r.status_code in (408, 429) or r.status_code >= 500
            after = r.headers.get("Retry-After")
            raise VendorError(self.registry, f"{what}: HTTP {r.status_code} {_message(r)}", status=r.status_code,
                              temporary=temporary, retry_after=float(after) if after and after.isdigit() else None)
        try:
            return retry.call(self.policy, go)
        except VendorError as exc:
            if exc.temporary:
                raise VendorError(self.registry, f"{exc.detail} (gave up after {retry.attempts_made(exc, self.policy)} attempts)",
                                  status=exc.status) from None
            raise


def _message(r: httpx.Response) -> str:
    try:
        data = r.json()
    except ValueError:
        return r.reason_phrase
    if isinstance(data, dict):
        return str(data.get("message") or data.get("detail") or data.get("errors") or r.reason_phrase)[:200]
    return r.reason_phrase


# --------------------------------------------------------------------------- GHCR


class GHCR:
    """GitHub Packages REST API for ``ghcr.io/<owner>/<package>`` (specs/lifecycle.md §4.7)."""

    kind = "ghcr"

    def __init__(self, registry: str, credentials: Credentials | None, *, policy: retry.RetryPolicy,
                 api: str = GITHUB_API, transport: httpx.BaseTransport | None = None) -> None:
        self.registry = registry
        self.token = credentials.password if credentials else ""
        self.api = api.rstrip("/")
        self.http = _Http(registry, policy, transport)
        self._base: dict[str, str] = {}       # repo -> versions URL that answered
        self._scopes: str | None = None
        self._versions: dict[str, dict[str, VendorImage]] = {}

    def close(self) -> None:
        self.http.close()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28"}

    @staticmethod
    def split(repo: str) -> tuple[str, str]:
        owner, _, package = repo.partition("/")
        if not package:
            raise VendorError("ghcr", f"{repo}: a ghcr.io repository is <owner>/<package>")
        return owner, package

    def _versions_url(self, repo: str) -> str:
        if repo in self._base:
            return self._base[repo]
        owner, package = self.split(repo)
        pkg = quote(package, safe="")
        for url in (f"{self.api}/orgs/{owner}/packages/container/{pkg}/versions",
                    f"{self.api}/users/{owner}/packages/container/{pkg}/versions"):
            r = self.http.call("GET", url, what=f"package versions of {repo}", ok=(404,), headers=self._headers(),
                               params={"per_page": 1})
            if r.status_code != 404:
                self._scopes = r.headers.get("X-OAuth-Scopes", self._scopes)
                self._base[repo] = url
                return url
        raise VendorError(self.registry, f"package {repo} not found through the GitHub Packages API (is the token"
                          " allowed to read:packages?)", status=404)

    def push_times(self, repo: str) -> dict[str, VendorImage]:
        if repo in self._versions:
            return self._versions[repo]
        url: str | None = self._versions_url(repo)
        out: dict[str, VendorImage] = {}
        params: dict[str, Any] | None = {"per_page": 100}
        while url:
            r = self.http.call("GET", url, what=f"package versions of {repo}", headers=self._headers(), params=params)
            for v in r.json() or []:
                tags = tuple(((v.get("metadata") or {}).get("container") or {}).get("tags") or [])
                out[str(v.get("name"))] = VendorImage(str(v.get("name")), parse_time(v.get("created_at")), tags,
                                                      str(v.get("id")))
            nxt = r.links.get("next", {}).get("url")
            url, params = nxt, None
        self._versions[repo] = out
        return out

    def can_delete(self, repo: str) -> str | None:
        self._versions_url(repo)
        if self._scopes is not None and "delete:packages" not in {s.strip() for s in self._scopes.split(",")}:
            return ("ghcr.io deletes go through the GitHub Packages API and need a classic personal access token"
                    " with the delete:packages scope; this token has: " + (self._scopes or "no scopes"))
        return None

    def delete(self, repo: str, digest: str, tags: Sequence[str] = ()) -> str:
        version = self.push_times(repo).get(digest)
        if version is None or not version.version_id:
            self._versions.pop(repo, None)         # the list may be older than the image: ask GitHub again
            version = self.push_times(repo).get(digest)
        if version is None or not version.version_id:
            return "gone"
        r = self.http.call("DELETE", f"{self._versions_url(repo)}/{version.version_id}", ok=(404,),
                           what=f"delete package version {version.version_id} ({digest[:19]}) of {repo}",
                           headers=self._headers())
        return "gone" if r.status_code == 404 else "deleted"


# --------------------------------------------------------------------------- Docker Hub


class DockerHub:
    """Hub API (``hub.docker.com``) for push times and tag deletes; digests through the registry API."""

    kind = "dockerhub"

    def __init__(self, registry: str, credentials: Credentials | None, oci: Registry, *,
                 policy: retry.RetryPolicy, api: str = HUB_API, transport: httpx.BaseTransport | None = None) -> None:
        self.registry = registry
        self.credentials = credentials
        self.oci = oci
        self.api = api.rstrip("/")
        self.http = _Http(registry, policy, transport)
        self._token: str | None = None
        self._cache: dict[str, dict[str, VendorImage]] = {}

    def close(self) -> None:
        self.http.close()

    def _auth(self) -> dict[str, str]:
        if self._token is None:
            if not self.credentials or not self.credentials.password:
                raise VendorError(self.registry, "the Docker Hub API needs a username and a personal access token")
            r = self.http.call("POST", f"{self.api}/v2/auth/token", what="Docker Hub API login",
                               json={"identifier": self.credentials.username, "secret": self.credentials.password})
            token = (r.json() or {}).get("access_token") or (r.json() or {}).get("token")
            if not token:
                raise VendorError(self.registry, "Docker Hub API login answered without a token")
            log.register_secret(token)
            self._token = str(token)
        return {"Authorization": f"Bearer {self._token}"}

    @staticmethod
    def split(repo: str) -> tuple[str, str]:
        ns, _, name = repo.partition("/")
        return ("library", ns) if not name else (ns, name)

    def push_times(self, repo: str) -> dict[str, VendorImage]:
        if repo in self._cache:
            return self._cache[repo]
        ns, name = self.split(repo)
        url: str | None = f"{self.api}/v2/namespaces/{ns}/repositories/{name}/tags?page_size=100"
        first: dict[str, datetime | None] = {}
        tags: dict[str, list[str]] = {}
        while url:
            r = self.http.call("GET", url, what=f"Docker Hub tags of {repo}", headers=self._auth())
            data = r.json() or {}
            for t in data.get("results") or []:
                digest = t.get("digest")
                if not digest:
                    continue
                when = parse_time(t.get("tag_last_pushed") or t.get("last_updated"))
                tags.setdefault(digest, []).append(str(t.get("name")))
                known = first.get(digest)
                first[digest] = when if known is None or (when is not None and when < known) else known
            url = data.get("next")
        out = {d: VendorImage(d, first[d], tuple(sorted(tags[d]))) for d in first}
        self._cache[repo] = out
        return out

    def can_delete(self, repo: str) -> str | None:
        """Login works and the token may delete: Docker Hub grants ``delete`` only to a token with the
        "Read, Write, Delete" permission, and says so in the registry token's ``access`` claim."""
        try:
            self._auth()
            granted = self.oci.granted(repo, ("pull", "delete"))
        except (VendorError, RegistryError) as exc:
            return str(exc)
        if granted is not None and not {"delete", "*"} & granted:
            return ("this Docker Hub token may not delete (granted: " + (", ".join(sorted(granted)) or "nothing")
                    + "); deletes need an access token with the \"Read, Write, Delete\" permission")
        return None

    def delete(self, repo: str, digest: str, tags: Sequence[str] = ()) -> str:
        ns, name = self.split(repo)
        for tag in tags:
            self.http.call("DELETE", f"{self.api}/v2/repositories/{ns}/{name}/tags/{quote(tag, safe='')}/",
                           ok=(404,), what=f"delete tag {repo}:{tag} (Hub API)", headers=self._auth())
        try:
            self.oci.manifest_delete(repo, digest)
        except NotFound:
            return "gone"
        return "deleted"


# --------------------------------------------------------------------------- Harbor


class Harbor:
    """Harbor ``/api/v2.0`` artifacts (push_time); deletes go through the OCI API."""

    kind = "harbor"

    def __init__(self, registry: str, host: str, credentials: Credentials | None, oci: Registry, *,
                 policy: retry.RetryPolicy, scheme: str = "https",
                 transport: httpx.BaseTransport | None = None) -> None:
        self.registry = registry
        self.base = f"{scheme}://{host}/api/v2.0"
        self.auth = (credentials.username, credentials.password) if credentials and credentials.password else None
        self.oci = oci
        self.http = _Http(registry, policy, transport)
        self._cache: dict[str, dict[str, VendorImage]] = {}

    def close(self) -> None:
        self.http.close()

    def push_times(self, repo: str) -> dict[str, VendorImage]:
        if repo in self._cache:
            return self._cache[repo]
        project, _, name = repo.partition("/")
        enc = quote(quote(name, safe=""), safe="")  # Harbor wants a/b as a%252Fb
        out: dict[str, VendorImage] = {}
        page = 1
        while True:
            r = self.http.call("GET", f"{self.base}/projects/{project}/repositories/{enc}/artifacts",
                               what=f"Harbor artifacts of {repo}", auth=self.auth,
                               params={"page": page, "page_size": 100, "with_tag": "true"})
            items = r.json() or []
            for a in items:
                tags = tuple(str(t.get("name")) for t in a.get("tags") or [])
                out[str(a.get("digest"))] = VendorImage(str(a.get("digest")), parse_time(a.get("push_time")), tags)
            if len(items) < 100:
                break
            page += 1
        self._cache[repo] = out
        return out

    def can_delete(self, repo: str) -> str | None:
        return oci_can_delete(self.oci, repo)

    def delete(self, repo: str, digest: str, tags: Sequence[str] = ()) -> str:
        return oci_delete(self.oci, repo, digest)


# --------------------------------------------------------------------------- ECR


def ecr_describe_argv(repo: str, region: str, registry_id: str | None = None) -> list[str]:
    extra = ["--registry-id", registry_id] if registry_id else []
    return ["aws", "ecr", "describe-images", "--repository-name", repo, "--region", region, *extra,
            "--output", "json"]


def ecr_delete_argv(repo: str, region: str, digests: Sequence[str], registry_id: str | None = None) -> list[str]:
    extra = ["--registry-id", registry_id] if registry_id else []
    return ["aws", "ecr", "batch-delete-image", "--repository-name", repo, "--region", region, *extra,
            "--output", "json", "--image-ids", *[f"imageDigest={d}" for d in digests]]


def parse_ecr_images(details: Sequence[Mapping[str, Any]]) -> dict[str, VendorImage]:
    out: dict[str, VendorImage] = {}
    for d in details:
        digest = str(d.get("imageDigest"))
        out[digest] = VendorImage(digest, parse_time(d.get("imagePushedAt")), tuple(d.get("imageTags") or ()))
    return out


class _EcrImages(EcrClient):
    """The two image calls prune needs, on the shared ECR client (boto3, one retry policy)."""

    def images(self, repo: str, registry_id: str | None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"repositoryName": repo, "maxResults": 1000}
        if registry_id:
            kwargs["registryId"] = registry_id
        out: list[dict[str, Any]] = []
        while True:
            try:
                data = self._call(f"DescribeImages {repo}", self._client.describe_images, **kwargs)
            except EcrError as exc:
                if exc.code == "RepositoryNotFoundException":
                    return []
                raise
            out += data.get("imageDetails") or []
            if not data.get("nextToken"):
                return out
            kwargs["nextToken"] = data["nextToken"]

    def delete_images(self, repo: str, registry_id: str | None, digests: Sequence[str]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"repositoryName": repo, "imageIds": [{"imageDigest": d} for d in digests]}
        if registry_id:
            kwargs["registryId"] = registry_id
        return dict(self._call(f"BatchDeleteImage {repo}", self._client.batch_delete_image, **kwargs))


class ECR:
    """ECR's DescribeImages (imagePushedAt, untagged images too) and BatchDeleteImage: boto3 when
    installed (the ``ecr`` extra, shared with ``pipeline ecr``), else the aws CLI through the one
    subprocess chokepoint. AWS settings come from the environment mapping the CLI passes."""

    kind = "ecr"

    def __init__(self, registry: str, region: str | None, *, registry_id: str | None = None,
                 env: Mapping[str, str] | None = None, policy: retry.RetryPolicy | None = None,
                 client: Any = None, run: Callable[..., proc.Completed] = proc.run) -> None:
        self.registry = registry
        self.region = region or ""
        self.registry_id = registry_id
        self.env = dict(env or {})
        self.run = run
        self.client = client
        if client is None and self.region and have_boto3():
            self.client = _EcrImages(self.region, self.env, policy=policy)
        self._cache: dict[str, dict[str, VendorImage]] = {}

    def close(self) -> None:
        pass

    def push_times(self, repo: str) -> dict[str, VendorImage]:
        if repo not in self._cache:
            if self.client is not None:
                details = self.client.images(repo, self.registry_id)
            else:
                out = self.run(ecr_describe_argv(repo, self.region, self.registry_id), env=aws_env(self.env),
                               what=f"{self.registry}: aws ecr describe-images {repo}")
                details = json.loads(out.stdout or "{}").get("imageDetails") or []
            self._cache[repo] = parse_ecr_images(details)
        return self._cache[repo]

    def can_delete(self, repo: str) -> str | None:
        return None if self.region else "ECR deletes need a region (aws_region in the registry entry or AWS_REGION)"

    def delete(self, repo: str, digest: str, tags: Sequence[str] = ()) -> str:
        if self.client is not None:
            data = self.client.delete_images(repo, self.registry_id, [digest])
        else:
            out = self.run(ecr_delete_argv(repo, self.region, [digest], self.registry_id), env=aws_env(self.env),
                           what=f"{self.registry}: aws ecr batch-delete-image {repo}@{digest[:19]}")
            data = json.loads(out.stdout or "{}")
        for failure in data.get("failures") or []:
            if failure.get("failureCode") == "ImageNotFound":
                return "gone"
            raise VendorError(self.registry, f"ECR could not delete {repo}@{digest[:19]}: "
                              f"{failure.get('failureCode')} {failure.get('failureReason', '')}")
        return "deleted"


# --------------------------------------------------------------------------- plain OCI (distribution, Harbor)

PROBE_DIGEST = "sha256:" + "0" * 64


def oci_can_delete(client: Registry, repo: str) -> str | None:
    """Ask with a digest nobody has: 404 means deletes work, 405/UNSUPPORTED means they are off."""
    try:
        client.manifest_delete(repo, PROBE_DIGEST)
    except NotFound:
        return None
    except RegistryError as exc:
        if exc.status == 405 or exc.code == "UNSUPPORTED":
            return ("this registry does not allow deletes (distribution/registry:2 needs storage.delete.enabled:"
                    " true, i.e. REGISTRY_STORAGE_DELETE_ENABLED=true; pull-through caches never delete)")
        if exc.status in (401, 403):
            return f"the credentials may not delete here ({exc.detail})"
        raise
    return None  # a registry that accepted deleting a digest it does not have


def oci_delete(client: Registry, repo: str, digest: str) -> str:
    try:
        client.manifest_delete(repo, digest)
    except NotFound:
        return "gone"
    return "deleted"


class Distribution:
    """The OCI API alone: no push times; deletes by digest (every tag on it goes too)."""

    kind = "distribution"

    def __init__(self, registry: str, oci: Registry) -> None:
        self.registry = registry
        self.oci = oci

    def close(self) -> None:
        pass

    def push_times(self, repo: str) -> dict[str, VendorImage]:
        return {}

    def can_delete(self, repo: str) -> str | None:
        return oci_can_delete(self.oci, repo)

    def delete(self, repo: str, digest: str, tags: Sequence[str] = ()) -> str:
        return oci_delete(self.oci, repo, digest)


def adapter(kind: str, *, name: str, host: str, oci: Registry, credentials: Credentials | None,
            policy: retry.RetryPolicy, region: str | None = None, registry_id: str | None = None,
            env: Mapping[str, str] | None = None, scheme: str = "https") -> Any:
    """The adapter for ``kind`` (see :func:`host_kind`)."""
    if kind == "ghcr":
        return GHCR(name, credentials, policy=policy)
    if kind == "dockerhub":
        return DockerHub(name, credentials, oci, policy=policy)
    if kind == "harbor":
        return Harbor(name, host, credentials, oci, policy=policy, scheme=scheme)
    if kind == "ecr":
        return ECR(name, region, registry_id=registry_id, env=env, policy=policy)
    return Distribution(name, oci)


__all__ = ["DockerHub", "Distribution", "ECR", "GHCR", "Harbor", "VendorError", "VendorImage", "adapter",
           "host_kind", "oci_can_delete", "oci_delete", "parse_time"]
