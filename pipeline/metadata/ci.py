"""CI context: ``detect(env) -> CIInfo`` for GitHub Actions, GitLab CI, Jenkins and local git.

Each provider maps its own variables onto one vocabulary, so that the same
commit and ref give the same tags everywhere (design invariant 3):

- ref: ``refs/heads/<b>``, ``refs/tags/<t>`` or ``refs/pull/<n>/merge`` (GitLab
  MRs and Jenkins change requests included, so the PR tag is ``pr-<n>`` on all);
- event: ``push``, ``tag``, ``pull_request``, ``schedule`` or ``manual``;
- sha: always the full sha (GitLab's 8-char short sha is never used).

Only :func:`detect` and the small pure helpers are public. Git is reached only
through a :class:`~pipeline.tools.git.GitReader`, and only for what the CI
does not state.

Jenkins has no variable for the build cause: a Jenkinsfile may set
``PIPELINE_EVENT=schedule|manual`` (see :func:`_jenkins`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import ConfigError
from pipeline.times import parse_time
from pipeline.tools.git import GitReader


@dataclass(frozen=True)
class CIInfo:
    provider: str                 # "github" | "gitlab" | "jenkins" | "local"
    event: str                    # normalised: "push" | "tag" | "pull_request" | "schedule" | "manual"
    event_name: str               # the provider's own word (GITHUB_EVENT_NAME, CI_PIPELINE_SOURCE, ...)
    ref: str                      # "refs/heads/<b>" | "refs/tags/<t>" | "refs/pull/<n>/merge" | ""
    sha: str                      # full commit sha, "" when unknown
    pr_number: int | None = None
    default_branch: str | None = None
    base_ref: str = ""            # metadata-action's {{base_ref}}
    commit_time: datetime | None = None   # timezone-aware
    run_id: str = ""
    repository_url: str = ""      # https://host/owner/repo, no trailing .git
    repository_name: str = ""     # "repo"
    description: str = ""         # repository description when the CI tells it (GitHub payload)
    license: str = ""             # SPDX id when the CI tells it (GitHub payload)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["commit_time"] = self.commit_time.isoformat() if self.commit_time else None
        return d


# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------

PROVIDERS = ("github", "gitlab", "jenkins", "local")
EVENTS = ("push", "tag", "pull_request", "schedule", "manual")

HEADS = "refs/heads/"
TAGS = "refs/tags/"
PULL = "refs/pull/"

#: GitHub event names whose meaning does not come from the ref. Everything else
#: (push, create, pull_request_review, merge_group, …) is classified by the ref
#: prefix, as metadata-action does. repository_dispatch is an API trigger, the
#: counterpart of GitLab's "api"/"trigger" sources, hence "manual" for parity.
GITHUB_EVENTS: Mapping[str, str] = {
    "pull_request": "pull_request",
    "pull_request_target": "pull_request",
    "workflow_dispatch": "manual",
    "repository_dispatch": "manual",
    "schedule": "schedule",
    "release": "tag",
}

#: GitLab CI_PIPELINE_SOURCE values for branch pipelines. Tag and MR pipelines
#: are classified by CI_COMMIT_TAG / CI_MERGE_REQUEST_IID first, whatever started them.
GITLAB_EVENTS: Mapping[str, str] = {
    "push": "push",
    "schedule": "schedule",
    **{source: "manual" for source in
       ("web", "api", "trigger", "chat", "webide", "pipeline", "parent_pipeline")},
}

#: Values a Jenkinsfile may put in PIPELINE_EVENT (Jenkins has no variable for
#: the build cause; the Groovy side can read ``currentBuild.getBuildCauses``).
JENKINS_EVENTS = ("push", "schedule", "manual")

_PULL_REF = re.compile(r"^refs/pull/(\d+)/(?:merge|head)$")
# A PR ref as it decorates a detached HEAD: pull/7/merge (actions/checkout),
# refs/remotes/pull/7/merge (full form), origin/pr refspecs, GitLab merge-requests/7/head.
_PULL_DECORATION = re.compile(
    r"^(?:refs/)?(?:remotes/)?(?:[^/]+/)?(?:pull|merge-requests)/(\d+)/(?:merge|head)$")
# scp-like git URL: [user@]host:path (no scheme).
_SCP_URL = re.compile(r"^(?:[^@/\s]+@)?(?P<host>[^:/\s\[\]]+):(?P<path>.+)$")
_URL_SCHEMES = {"http", "https", "ssh", "git", "git+ssh", "ssh+git"}


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

def detect(
    env: Mapping[str, str],
    *,
    git: GitReader | None = None,
    pr_head_sha: bool | None = None,
    default_branch: str | None = None,
) -> CIInfo:
    """Describe the commit and ref being released, the same way on every CI.

    ``env`` is the environment as a mapping (the CLI passes ``os.environ``;
    tests pass dicts): this module never reads the process environment, so a
    result depends only on its arguments (design invariant 3).

    ``git`` is consulted only for what the CI does not state (sha, commit
    time, default branch, repository URL, and the ref itself on a laptop or a
    Jenkins job without branch variables); it never overrides the CI. With
    ``git=None`` no git command runs at all and a local run has an empty
    ref and sha.

    ``pr_head_sha`` (``None``: read ``DOCKER_METADATA_PR_HEAD_SHA``) makes a
    pull-request build use the PR head commit instead of the CI's test-merge
    commit. ``default_branch`` (config ``tags.default_branch``) wins over
    anything detected.

    Raises :class:`ConfigError` when the environment contradicts itself in a
    way that would produce wrong tags (unreadable GITHUB_EVENT_PATH, a
    pull_request_target payload without a PR number, a non-numeric MR/PR id,
    an unknown PIPELINE_EVENT).
    """
    if pr_head_sha is None:
        pr_head_sha = _get(env, "DOCKER_METADATA_PR_HEAD_SHA").lower() == "true"
    provider = detect_provider(env)
    if provider == "github":
        info = _github(env, pr_head_sha=pr_head_sha)
    elif provider == "gitlab":
        info = _gitlab(env, pr_head_sha=pr_head_sha)
    elif provider == "jenkins":
        info = _jenkins(env, git)
    else:
        info = _local(git)
    if git is not None:
        info = _fill_from_git(info, git)
    override = (default_branch or "").strip().removeprefix(HEADS)
    if override:
        info = replace(info, default_branch=override)
    return info


def detect_provider(env: Mapping[str, str]) -> str:
    """Which CI runs us: the first match of github, gitlab, jenkins, else local.

    GitHub and GitLab are checked first because their runners may also carry
    BUILD_NUMBER-like variables; Jenkins has no single marker, so a job name
    plus a build id counts when JENKINS_URL is hidden.
    """
    if _get(env, "GITHUB_ACTIONS").lower() == "true":
        return "github"
    if _get(env, "GITLAB_CI").lower() == "true":
        return "gitlab"
    if _get(env, "JENKINS_URL") or (
            (_get(env, "BUILD_ID") or _get(env, "BUILD_NUMBER")) and _get(env, "JOB_NAME")):
        return "jenkins"
    return "local"


# ---------------------------------------------------------------------------
# GitHub Actions
# ---------------------------------------------------------------------------

def _github(env: Mapping[str, str], *, pr_head_sha: bool) -> CIInfo:
    """GITHUB_* variables plus the event payload, read like docker/metadata-action (spec §9)."""
    payload = read_event_payload(env)
    event_name = _get(env, "GITHUB_EVENT_NAME")
    ref = _get(env, "GITHUB_REF")
    sha = _get(env, "GITHUB_SHA")
    pull = _obj(payload.get("pull_request"))
    repo = _obj(payload.get("repository"))
    number = _int(payload.get("number"))
    if number is None:
        number = _int(pull.get("number"))

    if event_name == "pull_request_target":
        # GITHUB_REF is the *base* branch here; building it as a branch would
        # publish branch tags for untrusted PR code.
        if number is None:
            raise ConfigError(
                f"GITHUB_EVENT_PATH={_get(env, 'GITHUB_EVENT_PATH') or '(unset)'}: a pull_request_target "
                "event needs the PR number in the event payload ('number'); cannot tell which PR this is")
        ref = f"{PULL}{number}/merge"
    if pr_head_sha and event_name.startswith("pull_request"):
        sha = _str(_obj(pull.get("head")).get("sha")) or sha

    event = GITHUB_EVENTS.get(event_name) or event_from_ref(ref)
    pr_number = None
    if event == "pull_request":
        pr_number = number if number is not None else pr_number_from_ref(ref)
    return CIInfo(
        provider="github",
        event=event,
        event_name=event_name,
        ref=ref,
        sha=sha,
        pr_number=pr_number,
        default_branch=_str(repo.get("default_branch")) or None,
        base_ref=_github_base_ref(ref, payload, env),
        commit_time=_github_commit_time(payload, sha),
        run_id=_get(env, "GITHUB_RUN_ID"),
        repository_url=_github_repository_url(env, repo),
        repository_name=_str(repo.get("name")) or _get(env, "GITHUB_REPOSITORY").rsplit("/", 1)[-1],
        description=_str(repo.get("description")),
        license=_str(_obj(repo.get("license")).get("spdx_id")),
    )


def read_event_payload(env: Mapping[str, str]) -> dict[str, Any]:
    """The JSON payload at GITHUB_EVENT_PATH; ``{}`` when the variable is unset or empty.

    A path that is set but cannot be read, or does not hold a JSON object, is a
    :class:`ConfigError`: guessing without the payload silently changes the ref
    (pull_request_target), the PR number and the default branch, i.e. the tags.
    """
    path = _get(env, "GITHUB_EVENT_PATH")
    if not path:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError(f"GITHUB_EVENT_PATH={path}: cannot read the event payload ({reason}); "
                          "point it at the workflow's event JSON or unset it") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"GITHUB_EVENT_PATH={path}: the event payload is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"GITHUB_EVENT_PATH={path}: the event payload is not a JSON object")
    return data


def _github_base_ref(ref: str, payload: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """metadata-action's ``{{base_ref}}``: tag → payload base_ref, PR → base branch, else ``""``."""
    if ref.startswith(TAGS):
        return _str(payload.get("base_ref")).removeprefix(HEADS)
    if ref.startswith(PULL):
        base = _obj(_obj(payload.get("pull_request")).get("base"))
        return _str(base.get("ref")) or _get(env, "GITHUB_BASE_REF")
    return ""


def _github_commit_time(payload: Mapping[str, Any], sha: str) -> datetime | None:
    """Commit time from a push payload: ``head_commit`` or the ``commits[]`` entry for ``sha``."""
    head = _obj(payload.get("head_commit"))
    if head and _str(head.get("id")) in ("", sha):
        found = parse_time(_str(head.get("timestamp")))
        if found:
            return found
    commits = payload.get("commits")
    for commit in commits if isinstance(commits, list) else []:
        commit = _obj(commit)
        if sha and _str(commit.get("id")) == sha:
            return parse_time(_str(commit.get("timestamp")))
    return None


def _github_repository_url(env: Mapping[str, str], repo: Mapping[str, Any]) -> str:
    url = normalize_repo_url(_str(repo.get("html_url")))
    if url:
        return url
    slug = _get(env, "GITHUB_REPOSITORY")
    if not slug:
        return ""
    server = _get(env, "GITHUB_SERVER_URL") or "https://github.com"
    return normalize_repo_url(f"{server.rstrip('/')}/{slug}")


# ---------------------------------------------------------------------------
# GitLab CI
# ---------------------------------------------------------------------------

def _gitlab(env: Mapping[str, str], *, pr_head_sha: bool) -> CIInfo:
    """GitLab predefined variables; MRs (and external GitHub PRs) become ``refs/pull/<iid>/merge``.

    CI_COMMIT_SHORT_SHA is deliberately ignored: it is 8 characters and tags
    must use metadata-action's 7 from the full sha.
    """
    source = _get(env, "CI_PIPELINE_SOURCE")
    tag = _get(env, "CI_COMMIT_TAG")
    sha = _get(env, "CI_COMMIT_SHA")
    mr_var, mr_iid = "CI_MERGE_REQUEST_IID", _get(env, "CI_MERGE_REQUEST_IID")
    target = _get(env, "CI_MERGE_REQUEST_TARGET_BRANCH_NAME")
    head_sha = _get(env, "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA")
    if not mr_iid:
        mr_var, mr_iid = "CI_EXTERNAL_PULL_REQUEST_IID", _get(env, "CI_EXTERNAL_PULL_REQUEST_IID")
        target = _get(env, "CI_EXTERNAL_PULL_REQUEST_TARGET_BRANCH_NAME")
        head_sha = _get(env, "CI_EXTERNAL_PULL_REQUEST_SOURCE_BRANCH_SHA")
    # CI_COMMIT_BRANCH exists since GitLab 12.6; older runners only have REF_NAME.
    branch = _get(env, "CI_COMMIT_BRANCH") or _get(env, "CI_COMMIT_REF_NAME")

    pr_number = None
    base_ref = ""
    if tag:
        ref, event = TAGS + tag, "tag"
    elif mr_iid:
        pr_number = _require_int(mr_var, mr_iid)
        ref, event, base_ref = f"{PULL}{pr_number}/merge", "pull_request", target
        if pr_head_sha and head_sha:
            # merged-results pipelines build a merge commit, like GitHub's test merge
            sha = head_sha
    else:
        ref = HEADS + branch if branch else ""
        event = GITLAB_EVENTS.get(source, "push")
    return CIInfo(
        provider="gitlab",
        event=event,
        event_name=source,
        ref=ref,
        sha=sha,
        pr_number=pr_number,
        default_branch=_get(env, "CI_DEFAULT_BRANCH") or None,
        base_ref=base_ref,
        commit_time=parse_time(_get(env, "CI_COMMIT_TIMESTAMP")),
        run_id=_get(env, "CI_PIPELINE_ID"),
        repository_url=normalize_repo_url(_get(env, "CI_PROJECT_URL")),
        repository_name=_get(env, "CI_PROJECT_NAME"),
        description=_get(env, "CI_PROJECT_DESCRIPTION"),
    )


# ---------------------------------------------------------------------------
# Jenkins (multibranch, or a plain job with the git plugin)
# ---------------------------------------------------------------------------

def _jenkins(env: Mapping[str, str], git: GitReader | None) -> CIInfo:
    """Jenkins multibranch variables, with git-plugin fallbacks.

    - TAG_NAME → a tag build. BRANCH_NAME then equals the tag name and is
      ignored (otherwise the tag would also be built as a branch).
    - CHANGE_ID → a PR, ``refs/pull/<CHANGE_ID>/merge`` with base_ref
      CHANGE_TARGET; BRANCH_NAME (``PR-24``) is ignored.
    - otherwise a branch: BRANCH_NAME, else GIT_LOCAL_BRANCH, else GIT_BRANCH
      without its remote (``origin/main`` → ``main``); with none of them, the
      ref is read from git like a local run. A plain job checking out
      ``refs/tags/*`` has ``GIT_BRANCH=refs/tags/<t>``: a tag build.
    - PIPELINE_EVENT=schedule|manual|push (optional, set by the Jenkinsfile from
      ``currentBuild.getBuildCauses(...)``) tells the cause of a branch build;
      Jenkins has no variable for it. Tag and PR builds ignore it.
    - BRANCH_IS_PRIMARY=true on a branch build names the default branch.
    """
    cause = _jenkins_cause(env)
    tag = _get(env, "TAG_NAME")
    change = _get(env, "CHANGE_ID")
    branch = _jenkins_branch(env)
    if not tag and branch.startswith(TAGS):
        # a plain job with branch specifier refs/tags/*: GIT_BRANCH is the tag ref
        tag, branch = branch[len(TAGS):], ""

    pr_number = None
    base_ref = ""
    default_branch = None
    if tag:
        ref, event = TAGS + tag, "tag"
    elif change:
        pr_number = _require_int("CHANGE_ID", change)
        ref, event, base_ref = f"{PULL}{pr_number}/merge", "pull_request", _get(env, "CHANGE_TARGET")
    elif branch:
        ref, event = HEADS + branch, cause or "push"
        if _get(env, "BRANCH_IS_PRIMARY").lower() == "true":
            default_branch = branch
    else:
        ref = local_ref(git) if git is not None else ""
        event = event_from_ref(ref)
        pr_number = pr_number_from_ref(ref)
        if event == "push" and cause:
            event = cause
    url = normalize_repo_url(_get(env, "GIT_URL") or _get(env, "GIT_URL_1"))
    return CIInfo(
        provider="jenkins",
        event=event,
        event_name=event,
        ref=ref,
        sha=_get(env, "GIT_COMMIT"),
        pr_number=pr_number,
        default_branch=default_branch,
        base_ref=base_ref,
        run_id=_get(env, "BUILD_NUMBER") or _get(env, "BUILD_ID"),
        repository_url=url,
        repository_name=repo_name_from_url(url),
    )


def _jenkins_cause(env: Mapping[str, str]) -> str:
    value = _get(env, "PIPELINE_EVENT").lower()
    if value and value not in JENKINS_EVENTS:
        raise ConfigError(f"PIPELINE_EVENT={value}: expected one of {', '.join(JENKINS_EVENTS)}")
    return value


def _jenkins_branch(env: Mapping[str, str]) -> str:
    """The branch of a branch build: BRANCH_NAME, GIT_LOCAL_BRANCH, then GIT_BRANCH minus its remote."""
    for name in ("BRANCH_NAME", "GIT_LOCAL_BRANCH"):
        value = _get(env, name)
        if value:
            return value
    git_branch = _get(env, "GIT_BRANCH")
    return git_branch if git_branch.startswith(TAGS) else strip_remote(git_branch)


def strip_remote(name: str) -> str:
    """``origin/main`` → ``main`` (the git plugin's GIT_BRANCH always names the remote).

    Also accepts ``refs/heads/x``, ``refs/remotes/<r>/x`` and ``remotes/<r>/x``;
    ``HEAD`` and ``detached`` mean "no branch" and give ``""``.
    """
    name = name.strip()
    if name.startswith(HEADS):
        name = name[len(HEADS):]
    else:
        for prefix in ("refs/remotes/", "remotes/"):
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        if "/" in name:
            name = name.split("/", 1)[1]
    return "" if name in ("", "HEAD", "detached") else name


# ---------------------------------------------------------------------------
# Local git (a laptop, or any unknown CI)
# ---------------------------------------------------------------------------

def _local(git: GitReader | None) -> CIInfo:
    """A laptop: everything from git. No repository (or no commit) is not an error.

    A tag pointing at HEAD wins over the checked-out branch: running a release
    on a tagged commit from a laptop is a tag release, as the CI's tag
    pipeline for that commit would be.
    """
    empty = CIInfo(provider="local", event="push", event_name="push", ref="", sha="")
    sha = git.head_sha() if git is not None else None
    if git is None or not sha:
        return empty
    ref = local_ref(git)
    event = event_from_ref(ref)
    return replace(empty, event=event, event_name=event, ref=ref, sha=sha, pr_number=pr_number_from_ref(ref))


def local_ref(git: GitReader) -> str:
    """The ref of HEAD: a tag at HEAD, else the branch, else parsed from the decorations.

    Multiple tags at HEAD: the first of :meth:`GitReader.tags_at_head` (the
    highest version), so every machine picks the same one.
    """
    tags = git.tags_at_head()
    if tags:
        return TAGS + tags[0]
    symbolic = git.symbolic_ref()
    if symbolic:
        return symbolic if symbolic.startswith(HEADS) else ""
    return ref_from_decorations(git.detached_ref_names() or ())


def ref_from_decorations(names: Sequence[str]) -> str:
    """A detached HEAD's ref from ``git show -s --pretty=%D`` names (spec §9).

    Order: a tag (``tag: X``) → ``refs/tags/X``; a PR ref (``pull/N/merge`` or
    ``/head``) → ``refs/pull/N/merge``; a remote branch (``origin/b``, origin
    preferred) → ``refs/heads/b``; a local branch → ``refs/heads/b``; else ``""``.
    Short (``origin/b``) and full (``refs/remotes/origin/b``) names both work;
    in the short form a name with a slash is read as ``<remote>/<branch>``.
    """
    tags: list[str] = []
    pulls: list[int] = []
    remotes: list[tuple[str, str]] = []
    local: list[str] = []
    for raw in names:
        name = raw.strip()
        if name.startswith("HEAD -> "):
            local.append(name[len("HEAD -> "):].removeprefix(HEADS))
            continue
        if name in ("", "HEAD", "grafted"):
            continue
        if name.startswith("tag: "):
            tags.append(name[len("tag: "):].strip().removeprefix(TAGS))
            continue
        if name.startswith(TAGS):
            tags.append(name[len(TAGS):])
            continue
        pull = _PULL_DECORATION.match(name)
        if pull:
            pulls.append(int(pull.group(1)))
        elif name.startswith(HEADS):
            local.append(name[len(HEADS):])
        elif name.startswith("refs/remotes/"):
            remote, _, branch = name[len("refs/remotes/"):].partition("/")
            if branch and branch != "HEAD":
                remotes.append((remote, branch))
        elif name.startswith("refs/"):
            continue  # stash, notes, replace refs: not something we release
        elif "/" in name:
            remote, _, branch = name.partition("/")
            if branch and branch != "HEAD":
                remotes.append((remote, branch))
        else:
            local.append(name)
    if tags:
        return TAGS + tags[0]
    if pulls:
        return f"{PULL}{pulls[0]}/merge"
    if remotes:
        remotes.sort(key=lambda rb: rb[0] != "origin")  # stable: origin first, else git's order
        return HEADS + remotes[0][1]
    if local:
        return HEADS + local[0]
    return ""


def _fill_from_git(info: CIInfo, git: GitReader) -> CIInfo:
    """Fill what the CI left unknown from git; never replace a value the CI stated."""
    sha = info.sha or git.head_sha() or ""
    commit_time = info.commit_time
    if commit_time is None and sha:
        commit_time = git.commit_time(sha)
    default_branch = info.default_branch or git.origin_head_branch() or None
    url = info.repository_url or normalize_repo_url(git.remote_url() or "")
    name = info.repository_name or repo_name_from_url(url)
    if not name:
        top = git.toplevel()
        name = PurePath(top).name if top else ""
    return replace(info, sha=sha, commit_time=commit_time, default_branch=default_branch,
                   repository_url=url, repository_name=name)


# ---------------------------------------------------------------------------
# Small pure helpers (public: tags.py and tests use them)
# ---------------------------------------------------------------------------

def event_from_ref(ref: str) -> str:
    """Normalised event implied by a ref alone: tag, pull_request, else push."""
    if ref.startswith(TAGS):
        return "tag"
    if ref.startswith(PULL):
        return "pull_request"
    return "push"


def pr_number_from_ref(ref: str) -> int | None:
    """``refs/pull/7/merge`` (or ``/head``) → 7; anything else → ``None``."""
    match = _PULL_REF.match(ref)
    return int(match.group(1)) if match else None


def normalize_repo_url(url: str) -> str:
    """A clone URL as a browsable ``https://host/owner/repo``: no credentials, port, ``.git``.

    ``git@host:o/r.git``, ``ssh://git@host:22/o/r.git``, ``git://host/o/r`` and
    ``https://user:token@host/o/r.git/`` all give ``https://host/o/r``. ``http``
    stays ``http`` (an internal server may have no TLS) and keeps a non-default
    port; ssh ports are dropped (they are not the web port). Local paths and
    ``file://`` URLs give ``""``: they mean nothing in an image label and would
    leak a machine's directory layout.
    """
    url = url.strip()
    if not url:
        return ""
    if "://" in url:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _URL_SCHEMES:
            return ""
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError:
            port = None
        out_scheme = "http" if scheme == "http" else "https"
        path = parts.path
        if ":" in host:
            host = f"[{host}]"
        if port and scheme in ("http", "https") and port != {"http": 80, "https": 443}[scheme]:
            host = f"{host}:{port}"
    else:
        match = _SCP_URL.match(url)
        if not match or len(match["host"]) == 1:  # C:\path is a Windows path, not host:path
            return ""
        host, path, out_scheme = match["host"].lower(), match["path"], "https"
    path = path.strip("/")
    if path.endswith(".git"):
        path = path[: -len(".git")].rstrip("/")
    if not host or not path:
        return ""
    return f"{out_scheme}://{host}/{path}"


def repo_name_from_url(url: str) -> str:
    """The last path segment of a normalised repository URL (``https://h/o/r`` → ``r``)."""
    if not url:
        return ""
    path = urlsplit(url).path.strip("/")
    return path.rsplit("/", 1)[-1] if path else ""


def _get(env: Mapping[str, str], key: str) -> str:
    """An env value, stripped; ``""`` when unset (CI systems set empty strings freely)."""
    value = env.get(key)
    return value.strip() if isinstance(value, str) else ""


def _str(value: Any) -> str:
    """A payload string; JSON ``null``/non-strings become ``""``."""
    return value.strip() if isinstance(value, str) else ""


def _obj(value: Any) -> dict[str, Any]:
    """A payload object; anything else becomes ``{}`` so lookups can chain."""
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    """A positive integer from JSON or env text; ``None`` otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
        return number if number > 0 else None
    return None


def _require_int(name: str, value: str) -> int:
    number = _int(value)
    if number is None:
        raise ConfigError(f"{name}={value}: expected a pull/merge request number")
    return number
