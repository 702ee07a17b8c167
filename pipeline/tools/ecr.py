"""Amazon ECR's API: login tokens and repository settings, through boto3 (the ``ecr`` extra) or the aws CLI.

* :func:`login_token` gives docker credentials (``AWS`` + a 12-hour token) with their expiry:
  boto3's ``GetAuthorizationToken`` when boto3 is installed, else ``aws ecr get-login-password``
  (whose token also lives 12 hours). The token is a secret: registered for redaction at once,
  read from stdout unscrubbed, never in an error.
* :class:`EcrClient` wraps the few repository calls ``pipeline ecr ensure|policy`` makes, each
  under the one retry policy; AWS errors become :class:`EcrError` (one line, temporary or not).

AWS settings come from the ``env`` mapping the CLI passes (``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``…,
``AWS_ENDPOINT_URL_ECR`` / ``AWS_ENDPOINT_URL`` for a local endpoint such as moto); anything
else botocore resolves itself (config files, SSO, web identity / OIDC roles, instance roles).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pipeline import log, retry
from pipeline.errors import InfraError, ToolError
from pipeline.tools import proc
from pipeline.tools.registry import Credentials

TOKEN_LIFETIME_S = 12 * 3600
INSTALL_HINT = "pip install 'pipeline[ecr]' (boto3), or install the aws CLI"
#: AWS error codes worth another attempt.
_TEMPORARY_CODES = {"Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
                    "TooManyRequestsException", "ServiceUnavailable", "ServiceUnavailableException",
                    "ServerException", "InternalFailure", "InternalError", "RequestTimeout",
                    "RequestTimeoutException", "LimitExceededException"}
T = TypeVar("T")


class EcrError(InfraError):
    """An ECR call failed. ``code`` is AWS's error code; ``temporary`` drives the retry policy."""

    def __init__(self, region: str, message: str, *, code: str | None = None, temporary: bool = False) -> None:
        message = " ".join(log.scrub(message).split())
        super().__init__(f"ECR {region}: {message}")
        self.code = code
        self.temporary = temporary
        self.retry_after: float | None = None


def have_boto3() -> bool:
    try:
        import boto3  # noqa: F401
    except ImportError:
        return False
    return True


def aws_env(env: Mapping[str, str]) -> dict[str, str]:
    """The AWS_* part of ``env`` (for the aws CLI, which reads its settings from the environment)."""
    return {k: v for k, v in env.items() if k.startswith("AWS_")}


def endpoint_url(env: Mapping[str, str]) -> str | None:
    return env.get("AWS_ENDPOINT_URL_ECR") or env.get("AWS_ENDPOINT_URL") or None


def decode_authorization_token(token: str) -> tuple[str, str]:
    """``base64("AWS:<password>")`` → ``("AWS", "<password>")``."""
    try:
        user, sep, password = base64.b64decode(token).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        user = sep = password = ""
    if not sep or not password:
        raise EcrError("login", "GetAuthorizationToken returned a token that is not base64 user:password")
    log.register_secret(password)
    return user, password


def token_expiry(expires_at: Any, now: float) -> float:
    """When to treat the token as expired: AWS's ``expiresAt`` when it is believable, else now + 12 h.

    A clock that disagrees with AWS's (or a test endpoint answering a date in the past) would
    otherwise make every call fetch a new token.
    """
    ts: float | None = None
    if hasattr(expires_at, "timestamp"):
        ts = float(expires_at.timestamp())
    elif isinstance(expires_at, (int, float)):
        ts = float(expires_at)
    if ts is None or ts <= now + 60 or ts > now + TOKEN_LIFETIME_S + 3600:
        return now + TOKEN_LIFETIME_S
    return ts


def _error(region: str, what: str, exc: Exception) -> EcrError:
    """A botocore exception → EcrError (one line, no request ids or signatures)."""
    name = type(exc).__name__
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # ClientError
        err = response.get("Error") or {}
        code = str(err.get("Code") or name)
        message = str(err.get("Message") or "")
        status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        temporary = code in _TEMPORARY_CODES or status >= 500 or status == 429
        return EcrError(region, f"{what}: {code}: {message}".rstrip(": "), code=code, temporary=temporary)
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return EcrError(region, f"{what}: no usable AWS credentials (set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                        "AWS_SECRET_ACCESS_KEY, or run with an IAM / OIDC role)", code=name)
    if name == "NoRegionError":
        return EcrError(region, f"{what}: no AWS region (aws_region in the registry entry, or AWS_REGION)", code=name)
    temporary = name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                         "ConnectionClosedError", "ConnectionError", "ProxyConnectionError")
    return EcrError(region, f"{what}: {name}: {exc}", code=name, temporary=temporary)


def boto3_client(region: str, env: Mapping[str, str]) -> Any:
    """A boto3 ECR client for ``region`` with settings from ``env``; botocore's own retries off
    (the one policy retries)."""
    try:
        import boto3
        from botocore.config import Config as BotoConfig
    except ImportError:
        raise ToolError(f"ECR: boto3 is not installed; {INSTALL_HINT}", tool="boto3") from None
    kwargs: dict[str, Any] = {"region_name": region}
    if env.get("AWS_PROFILE"):
        kwargs["profile_name"] = env["AWS_PROFILE"]
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        kwargs["aws_access_key_id"] = env["AWS_ACCESS_KEY_ID"]
        kwargs["aws_secret_access_key"] = env["AWS_SECRET_ACCESS_KEY"]
        log.register_secret(env["AWS_SECRET_ACCESS_KEY"])
        if env.get("AWS_SESSION_TOKEN"):
            kwargs["aws_session_token"] = env["AWS_SESSION_TOKEN"]
            log.register_secret(env["AWS_SESSION_TOKEN"])
    try:
        session = boto3.session.Session(**kwargs)
        return session.client("ecr", endpoint_url=endpoint_url(env),
                              config=BotoConfig(retries={"total_max_attempts": 1}, connect_timeout=10,
                                                read_timeout=60, user_agent_extra="pipeline"))
    except Exception as exc:  # noqa: BLE001 - profile not found and friends
        raise _error(region, "client", exc) from None


class EcrClient:
    """The ECR calls ``pipeline`` makes, each under the one retry policy."""

    def __init__(self, region: str, env: Mapping[str, str], *, policy: retry.RetryPolicy | None = None,
                 client: Any = None) -> None:
        self.region = region
        self.policy = policy or retry.RetryPolicy()
        self._client = client if client is not None else boto3_client(region, env)

    def _call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        def go() -> T:
            try:
                return fn(**kwargs)
            except Exception as exc:  # noqa: BLE001 - every botocore error is mapped
                raise _error(self.region, what, exc) from None
        try:
            return retry.call(self.policy, go)
        except EcrError as exc:
            if exc.temporary:
                raise EcrError(self.region, f"{exc.message.removeprefix(f'ECR {self.region}: ')} (gave up after"
                               f" {retry.attempts_made(exc, self.policy)} attempts)", code=exc.code) from None
            raise

    def authorization_token(self, registry_id: str | None) -> tuple[str, str, float]:
        kwargs = {"registryIds": [registry_id]} if registry_id else {}
        data = self._call("GetAuthorizationToken", self._client.get_authorization_token, **kwargs)
        entries = data.get("authorizationData") or []
        if not entries:
            raise EcrError(self.region, "GetAuthorizationToken returned no authorization data")
        user, password = decode_authorization_token(entries[0]["authorizationToken"])
        return user, password, token_expiry(entries[0].get("expiresAt"), time.time())

    def describe_repository(self, name: str, registry_id: str | None) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"repositoryNames": [name]}
        if registry_id:
            kwargs["registryId"] = registry_id
        try:
            data = self._call(f"DescribeRepositories {name}", self._client.describe_repositories, **kwargs)
        except EcrError as exc:
            if exc.code == "RepositoryNotFoundException":
                return None
            raise
        repos = data.get("repositories") or []
        return repos[0] if repos else None

    def create_repository(self, request: Mapping[str, Any]) -> dict[str, Any]:
        data = self._call(f"CreateRepository {request['repositoryName']}", self._client.create_repository,
                          **dict(request))
        return dict(data.get("repository") or {})

    def put_scanning(self, name: str, registry_id: str | None, scan_on_push: bool) -> None:
        kwargs: dict[str, Any] = {"repositoryName": name, "imageScanningConfiguration": {"scanOnPush": scan_on_push}}
        if registry_id:
            kwargs["registryId"] = registry_id
        self._call(f"PutImageScanningConfiguration {name}", self._client.put_image_scanning_configuration, **kwargs)

    def put_mutability(self, name: str, registry_id: str | None, mutability: str,
                       exclusions: list[dict[str, str]]) -> None:
        kwargs: dict[str, Any] = {"repositoryName": name, "imageTagMutability": mutability}
        if exclusions:
            kwargs["imageTagMutabilityExclusionFilters"] = exclusions
        if registry_id:
            kwargs["registryId"] = registry_id
        self._call(f"PutImageTagMutability {name}", self._client.put_image_tag_mutability, **kwargs)

    def lifecycle_policy(self, name: str, registry_id: str | None) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"repositoryName": name}
        if registry_id:
            kwargs["registryId"] = registry_id
        try:
            data = self._call(f"GetLifecyclePolicy {name}", self._client.get_lifecycle_policy, **kwargs)
        except EcrError as exc:
            if exc.code == "LifecyclePolicyNotFoundException":
                return None
            raise
        return json.loads(data.get("lifecyclePolicyText") or "null")

    def put_lifecycle_policy(self, name: str, registry_id: str | None, document: Mapping[str, Any]) -> None:
        kwargs: dict[str, Any] = {"repositoryName": name, "lifecyclePolicyText": json.dumps(document)}
        if registry_id:
            kwargs["registryId"] = registry_id
        self._call(f"PutLifecyclePolicy {name}", self._client.put_lifecycle_policy, **kwargs)

    def repository_policy(self, name: str, registry_id: str | None) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"repositoryName": name}
        if registry_id:
            kwargs["registryId"] = registry_id
        try:
            data = self._call(f"GetRepositoryPolicy {name}", self._client.get_repository_policy, **kwargs)
        except EcrError as exc:
            if exc.code == "RepositoryPolicyNotFoundException":
                return None
            raise
        return json.loads(data.get("policyText") or "null")

    def set_repository_policy(self, name: str, registry_id: str | None, document: Mapping[str, Any]) -> None:
        kwargs: dict[str, Any] = {"repositoryName": name, "policyText": json.dumps(document)}
        if registry_id:
            kwargs["registryId"] = registry_id
        self._call(f"SetRepositoryPolicy {name}", self._client.set_repository_policy, **kwargs)


def login_token(region: str, registry_id: str | None, env: Mapping[str, str], *,
                policy: retry.RetryPolicy | None = None, what: str = "ECR login") -> Credentials:
    """Docker credentials for ECR (``AWS`` + token) with ``expires_at`` (epoch seconds).

    boto3 when installed, else ``aws ecr get-login-password`` (stdin/stdout only; the token is
    never on a command line).
    """
    if have_boto3():
        user, password, expires = EcrClient(region, env, policy=policy).authorization_token(registry_id)
        return Credentials(user, password, expires_at=expires)
    if proc.which("aws") is None:
        raise ToolError(f"{what}: neither boto3 nor the aws CLI is installed; {INSTALL_HINT}", tool="aws")
    argv = ["aws", "ecr", "get-login-password", "--region", region]
    if endpoint_url(env):
        argv += ["--endpoint-url", endpoint_url(env) or ""]
    started = time.time()
    out = proc.run(argv, env=aws_env(env), what=what, secret_output=True, timeout=120)
    token = out.stdout.strip()
    if not token:
        raise ToolError(f"{what}: aws ecr get-login-password printed no token", tool="aws")
    log.register_secret(token)
    return Credentials("AWS", token, expires_at=started + TOKEN_LIFETIME_S)


__all__ = ["EcrClient", "EcrError", "TOKEN_LIFETIME_S", "aws_env", "boto3_client", "decode_authorization_token",
           "endpoint_url", "have_boto3", "login_token", "token_expiry"]
