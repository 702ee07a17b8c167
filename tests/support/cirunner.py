"""Running generated CI files on this host, as a runner would: the GitHub workflow and the Jenkinsfile.

What runs is the generated file itself, read back: every ``run:`` step of the workflow's jobs (in
``needs`` order, matrix entries one after another, ``if:`` evaluated) and every ``sh`` step of the
Jenkinsfile's stages (``when`` evaluated, parallel stages one after another), each as the runner user
of :mod:`tests.support.runner` with the environment that CI gives. What cannot run here is replaced,
and each replacement is named:

GitHub ``uses:`` actions
  * ``actions/checkout``: the workspace is already the checkout (a copy of this repository's tracked
    files plus the test's project);
  * ``actions/setup-python``: a venv made from this machine's python3 (whose minor version must be
    the one asked for), its ``bin`` first on PATH, as setup-python puts its Python first;
  * ``actions/cache``: nothing; the workspace's ``.nox`` stays between jobs, as a cache hit restores it;
  * ``docker/setup-qemu-action``: checks that the QEMU binfmt handlers it would register are there
    (the root install registered them);
  * ``actions/upload-artifact`` / ``actions/download-artifact``: copies into and out of an artifacts
    directory (``pattern`` and ``merge-multiple`` as the action reads them);
  * ``runs-on`` labels: every job runs on this host (a matrix entry for arm64 builds under QEMU
    instead of on a native runner).

Jenkins steps
  * ``agent { label … }``: this host; ``withCredentials``: the bound variables from the test's
    credential store, by credential id; ``stash``/``unstash``: copies; ``junit`` and
    ``archiveArtifacts``: the files must exist.

An expression or an action this module does not know fails the test: nothing is skipped silently.
"""

from __future__ import annotations

import fnmatch
import glob as globmod
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.runner import Runner

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
JOB_KEYS = {"if", "runs-on", "steps", "env", "needs", "strategy", "permissions", "outputs"}
STEP_KEYS = {"name", "id", "uses", "with", "run", "env", "if"}


class CIError(AssertionError):
    pass


@dataclass
class StepLog:
    where: str
    command: str
    code: int
    out: str
    err: str


@dataclass
class Host:
    """A runner host: the user, the checkout every job starts from, the variables every job gets.

    Each job runs in a workspace of its own, a fresh copy of :attr:`checkout` (as a job on another
    runner gets its own checkout): what passes between jobs is artifacts (or stashes) only. Their
    ``.nox`` is one shared directory, as a cache restores it."""

    runner: Runner
    checkout: Path
    base_env: dict[str, str]
    log: list[StepLog] = field(default_factory=list)
    made: int = 0

    def __post_init__(self) -> None:
        self.cache = self.checkout.parent / "nox-cache"
        self.cache.mkdir(exist_ok=True)
        self.runner.own(self.cache)

    def workspace(self, name: str) -> Path:
        self.made += 1
        ws = self.checkout.parent / "jobs" / f"{self.made:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}"
        shutil.copytree(self.checkout, ws, symlinks=True)
        (ws / ".nox").symlink_to(self.cache)
        self.runner.own(ws)
        return ws

    def sh(self, where: str, script: str, env: Mapping[str, str], *, shell: tuple[str, ...],
           cwd: Path) -> StepLog:
        r = self.runner.run([*shell, script], self.runner.env({**self.base_env, **env}), cwd=cwd, timeout=2400)
        entry = StepLog(where, script, r.returncode, r.stdout, r.stderr)
        self.log.append(entry)
        if r.returncode != 0:
            raise CIError(f"{where}: `{script}` exited {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n"
                          f"{r.stderr[-5000:]}")
        return entry


# --------------------------------------------------------------------------- GitHub Actions


def _lookup(path: str, ctx: Mapping[str, Any]) -> Any:
    value: Any = ctx
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise CIError(f"unknown expression context: {path}")
        value = value[part]
    return value


def evaluate(expr: str, ctx: Mapping[str, Any]) -> Any:
    """The subset of GitHub's expression language the generated workflows use (comparisons joined by ``&&``
    or ``||``, without parentheses)."""
    expr = expr.strip()
    if "||" in expr:
        return any(bool(evaluate(part, ctx)) for part in expr.split("||"))
    if "&&" in expr:
        return all(bool(evaluate(part, ctx)) for part in expr.split("&&"))
    if expr == "always()":
        return True
    if expr.startswith("hashFiles("):
        return "hash"
    m = re.fullmatch(r"([\w.-]+)\s*(==|!=)\s*'([^']*)'", expr)
    if m:
        left = str(_lookup(m.group(1), ctx))
        return (left == m.group(3)) if m.group(2) == "==" else (left != m.group(3))
    if re.fullmatch(r"[\w.-]+", expr):
        return _lookup(expr, ctx)
    raise CIError(f"an expression the test runner does not know: {expr}")


def substitute(value: Any, ctx: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return EXPR.sub(lambda m: str(evaluate(m.group(1), ctx)), value)
    if isinstance(value, dict):
        return {k: substitute(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, ctx) for v in value]
    return value


def _condition(cond: Any, ctx: Mapping[str, Any]) -> bool:
    if cond is None:
        return True
    text = str(cond)
    m = EXPR.fullmatch(text.strip())
    return bool(evaluate(m.group(1) if m else text, ctx))


def _read_outputs(path: Path) -> dict[str, str]:
    """``name=value`` and ``name<<DELIM`` … ``DELIM`` lines of a GITHUB_OUTPUT file."""
    out: dict[str, str] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            j = i + 1
            while j < len(lines) and lines[j] != delim:
                j += 1
            out[name] = "\n".join(lines[i + 1:j])
            i = j + 1
            continue
        if "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        i += 1
    return out


class GitHub:
    """Runs a workflow's jobs for one event, as the runner user on this host."""

    def __init__(self, host: Host, text: str, *, event: str, ref: str, sha: str, secrets: Mapping[str, str],
                 actor: str = "pipeline-bot", repository: str = "acme/app") -> None:
        self.host = host
        self.workflow = yaml.safe_load(text)
        self.artifacts = host.checkout.parent / f"artifacts-{host.made}"
        self.temp = host.checkout.parent / "runner-temp"
        for d in (self.artifacts, self.temp):
            d.mkdir(exist_ok=True)
        host.runner.own(self.artifacts, self.temp)
        self.github = {"event_name": event, "ref": ref, "sha": sha, "actor": actor, "repository": repository}
        self.secrets = dict(secrets)
        self.env = {"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": event, "GITHUB_REF": ref,
                    "GITHUB_REF_NAME": ref.rsplit("/", 1)[-1],
                    "GITHUB_REF_TYPE": "tag" if ref.startswith("refs/tags/") else "branch", "GITHUB_SHA": sha,
                    "GITHUB_ACTOR": actor, "GITHUB_REPOSITORY": repository,
                    "GITHUB_SERVER_URL": "https://github.com", "GITHUB_RUN_ID": "1", "GITHUB_RUN_NUMBER": "1",
                    "RUNNER_OS": "Linux", "RUNNER_ARCH": "X64",
                    "RUNNER_TEMP": str(self.temp)}
        self.outputs: dict[str, dict[str, str]] = {}
        self.ran: list[str] = []

    def triggered(self) -> bool:
        """Does the workflow's ``on:`` start for this event and ref (push: its branches and tags globs)?"""
        on = self.workflow.get("on") or {}
        event = self.github["event_name"]
        if event not in on:
            return False
        spec = on[event] or {}
        ref = self.github["ref"]
        if event == "push" and ref.startswith("refs/tags/"):
            return any(fnmatch.fnmatchcase(ref[len("refs/tags/"):], g) for g in spec.get("tags") or [])
        if event == "push" and ref.startswith("refs/heads/"):
            return any(fnmatch.fnmatchcase(ref[len("refs/heads/"):], g) for g in spec.get("branches") or [])
        return True

    def run(self) -> dict[str, dict[str, str]]:
        if not self.triggered():
            raise CIError(f"the workflow does not start for a {self.github['event_name']} of {self.github['ref']}")
        jobs: dict[str, Any] = self.workflow["jobs"]
        done: set[str] = set()
        while len(done) < len(jobs):
            ready = [n for n, j in jobs.items() if n not in done and set(_needs(j)) <= done]
            if not ready:
                raise CIError(f"jobs that can never start: {sorted(set(jobs) - done)}")
            for name in ready:
                self._job(name, jobs[name])
                done.add(name)
        return self.outputs

    def _job(self, name: str, job: dict[str, Any]) -> None:
        ctx = {"github": self.github, "secrets": self.secrets, "vars": {}, "runner": {"os": "Linux", "arch": "X64"},
               "needs": {n: {"outputs": self.outputs.get(n, {})} for n in _needs(job)}}
        if not _condition(job.get("if"), ctx):
            return
        matrix = (job.get("strategy") or {}).get("matrix") or {}
        if set(matrix) - {"include"}:
            raise CIError(f"{name}: only matrix include lists are known here")
        for entry in matrix.get("include") or [{}]:
            self._steps(name, job, {**ctx, "matrix": entry})

    def _steps(self, name: str, job: dict[str, Any], ctx: dict[str, Any]) -> None:
        where = name + (f" ({ctx['matrix']})" if ctx.get("matrix") else "")
        self.ran.append(where)
        ws = self.host.workspace(where)
        unknown = set(job) - JOB_KEYS
        if unknown:
            raise CIError(f"{name}: job keys the test runner does not know: {sorted(map(str, unknown))}")
        env = {**substitute(self.workflow.get("env") or {}, ctx), **substitute(job.get("env") or {}, ctx)}
        steps_ctx: dict[str, Any] = {}
        ctx["steps"] = steps_ctx
        path_extra: list[str] = []
        for i, step in enumerate(job["steps"]):
            if not _condition(step.get("if"), ctx):
                continue
            label = f"{where} step {i + 1}"
            if set(step) - STEP_KEYS:
                raise CIError(f"{label}: step keys the test runner does not know: {sorted(set(step) - STEP_KEYS)}")
            step_env = {**env, **substitute(step.get("env") or {}, ctx)}
            if "uses" in step:
                self._action(label, ws, substitute(step["uses"], ctx), substitute(step.get("with") or {}, ctx),
                             path_extra)
                continue
            out_file = self.temp / f"output-{len(self.host.log)}"
            out_file.write_text("")
            self.host.runner.own(out_file)
            summary = self.temp / "summary.md"
            run_env = {**self.env, **step_env, "GITHUB_OUTPUT": str(out_file), "GITHUB_STEP_SUMMARY": str(summary),
                       "GITHUB_WORKSPACE": str(ws)}
            if path_extra:
                run_env["PATH"] = ":".join([*path_extra, self.host.runner.env(self.host.base_env)["PATH"]])
            self.host.sh(label, substitute(step["run"], ctx), run_env,
                         shell=("bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"), cwd=ws)
            if step.get("id"):
                steps_ctx[step["id"]] = {"outputs": _read_outputs(out_file)}
        self.outputs[name] = {k: substitute(v, ctx) for k, v in (job.get("outputs") or {}).items()}

    def _action(self, label: str, ws: Path, uses: str, with_: dict[str, Any], path_extra: list[str]) -> None:
        action = uses.split("@", 1)[0]
        if action == "actions/checkout":
            if not (ws / "noxfile.py").exists():
                raise CIError(f"{label}: the workspace is not a checkout")
        elif action == "actions/setup-python":
            want = str(with_.get("python-version", ""))
            have = f"{sys.version_info.major}.{sys.version_info.minor}"
            if want != have:
                raise CIError(f"{label}: setup-python {want} asked for; this host's substitute has {have}")
            venv = self.temp / f"python-{want}"
            if not (venv / "bin" / "python").exists():
                self.host.sh(label, f"python3 -m venv {venv}", {}, shell=("sh", "-c"), cwd=ws)
            path_extra.insert(0, str(venv / "bin"))
        elif action == "actions/cache":
            pass
        elif action == "docker/setup-qemu-action":
            handlers = [p.name for p in Path("/proc/sys/fs/binfmt_misc").glob("qemu-*")]
            if "qemu-aarch64" not in handlers and "qemu-x86_64" not in handlers:
                raise CIError(f"{label}: no QEMU binfmt handlers ({handlers})")
        elif action == "actions/upload-artifact":
            src = ws / str(with_["path"]).rstrip("/")
            dest = self.artifacts / str(with_["name"])
            if not src.exists():
                if with_.get("if-no-files-found") == "error":
                    raise CIError(f"{label}: upload-artifact: {src} does not exist")
                return
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest) if src.is_dir() else (dest.mkdir(parents=True), shutil.copy2(src, dest))
        elif action == "actions/download-artifact":
            target = ws / str(with_.get("path", "."))
            names = [p.name for p in self.artifacts.iterdir() if fnmatch.fnmatch(p.name, str(with_.get("pattern",
                                                                                                      "*")))]
            if not names:
                raise CIError(f"{label}: download-artifact: no artifact matches {with_.get('pattern')}")
            for n in names:
                dest = target if with_.get("merge-multiple") else target / n
                shutil.copytree(self.artifacts / n, dest, dirs_exist_ok=True)
            self.host.runner.own(target)
        else:
            raise CIError(f"{label}: no substitute for the action {uses}")


def _needs(job: Mapping[str, Any]) -> list[str]:
    needs = job.get("needs") or []
    return [needs] if isinstance(needs, str) else list(needs)


# --------------------------------------------------------------------------- Jenkins


_SH = re.compile(r"^sh '((?:[^'\\]|\\.)*)'$")
_CRED_USER = re.compile(r"usernamePassword\(credentialsId: '([^']*)', usernameVariable: '([^']*)',"
                        r" passwordVariable: '([^']*)'\)")
_CRED_STRING = re.compile(r"string\(credentialsId: '([^']*)', variable: '([^']*)'\)")
_ENV = re.compile(r"^(\w+) = '((?:[^'\\]|\\.)*)'$")
_STAGE = re.compile(r"^stage\('((?:[^'\\]|\\.)*)'\)$")


def _groovy_unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@dataclass
class Block:
    head: str
    body: list[Any] = field(default_factory=list)     # str statements and Blocks


def parse_blocks(text: str) -> Block:
    """A Jenkinsfile as nested blocks: a line ending in ``{`` opens one (a header that spans lines, as
    ``withCredentials([…]) {``, is joined first), ``}`` closes it; balanced one-line braces are statements."""
    root = Block("")
    stack = [root]
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("//"):
            continue
        if pending:
            line, pending = f"{pending} {line}", ""
        if line.startswith("withCredentials([") and not line.endswith("{"):
            pending = line
            continue
        if line == "}":
            stack.pop()
        elif line.endswith("{") and line.count("{") > line.count("}"):
            block = Block(line[:-1].strip())
            stack[-1].body.append(block)
            stack.append(block)
        else:
            stack[-1].body.append(line)
    if len(stack) != 1 or pending:
        raise CIError("the Jenkinsfile's braces do not balance")
    return root


class Jenkins:
    """Runs a declarative Jenkinsfile of the shape ``pipeline ci-init jenkins`` writes, for a branch or tag
    build, or one its cron trigger started (``timer``): ``changeRequest()`` stages are skipped, ``anyOf {
    branch …; tag … }`` is matched, ``triggeredBy 'TimerTrigger'`` (or its ``not``) decides by ``timer``,
    parallel stages run one after another."""

    def __init__(self, host: Host, text: str, *, branch: str | None, tag: str | None,
                 credentials: Mapping[str, Any], timer: bool = False) -> None:
        self.host = host
        self.tree = parse_blocks(text)
        self.branch, self.tag = branch, tag
        self.timer = timer              # started by the pipeline's cron trigger (triggeredBy 'TimerTrigger')
        self.credentials = dict(credentials)   # id -> (user, password) or secret text
        self.workspace = host.workspace("jenkins")     # the pipeline's agent; a stage's own agent gets its own
        self.stashes = host.checkout.parent / f"stashes-{host.made}"
        self.stashes.mkdir(exist_ok=True)
        self.ran: list[str] = []
        self.env: dict[str, str] = {"JENKINS_URL": "http://jenkins.invalid/", "BUILD_NUMBER": "1",
                                    "JOB_NAME": "acme/app"}
        if tag:
            self.env["TAG_NAME"] = tag
        if branch:
            self.env["BRANCH_NAME"] = branch

    def run(self) -> None:
        pipeline = self._child(self.tree, "pipeline")
        env_block = self._child(pipeline, "environment", required=False)
        for st in (env_block.body if env_block else []):
            m = _ENV.match(st)
            if not m:
                raise CIError(f"environment: a line the test runner does not know: {st}")
            self.env[m.group(1)] = _groovy_unquote(m.group(2))
        for stage in self._child(pipeline, "stages").body:
            self._stage(stage, [])

    @staticmethod
    def _child(block: Block, head: str, *, required: bool = True) -> Block | None:
        for b in block.body:
            if isinstance(b, Block) and b.head == head:
                return b
        if required:
            raise CIError(f"no {head} block in {block.head or 'the file'}")
        return None

    def _stage(self, block: Any, names: list[str], ws: Path | None = None) -> None:
        m = _STAGE.match(block.head) if isinstance(block, Block) else None
        if not m:
            raise CIError(f"stages: not a stage: {block if isinstance(block, str) else block.head}")
        names = [*names, _groovy_unquote(m.group(1))]
        ws = ws or self.workspace
        for st in block.body:
            if isinstance(st, str) and st.startswith("when ") and not self._when(st):
                return
            if isinstance(st, str) and st.startswith("agent "):       # another agent: its own workspace
                ws = self.host.workspace(" ".join(names))
        for part in block.body:
            if isinstance(part, str):
                if not part.startswith(("when ", "agent ")):
                    raise CIError(f"{' / '.join(names)}: a line the test runner does not know: {part}")
            elif part.head == "steps":
                self._steps(part, names, {}, ws)
            elif part.head == "parallel":
                for sub in part.body:
                    self._stage(sub, names, ws)
            elif part.head == "post":
                for cond in part.body:
                    if not isinstance(cond, Block) or cond.head != "always":
                        raise CIError(f"{' / '.join(names)}: a post condition the test runner does not know")
                    self._steps(cond, names, {}, ws)
            else:
                raise CIError(f"{' / '.join(names)}: a block the test runner does not know: {part.head}")

    def _steps(self, block: Block, names: list[str], bound: dict[str, str], ws: Path) -> None:
        where = " / ".join(names)
        for st in block.body:
            if isinstance(st, Block):
                if not st.head.startswith("withCredentials(["):
                    raise CIError(f"{where}: a block the test runner does not know: {st.head}")
                self._steps(st, names, {**bound, **self._bind(st.head)}, ws)
                continue
            m = _SH.match(st)
            if m:
                self.ran.append(where)
                self.host.sh(where, _groovy_unquote(m.group(1)), {**self.env, "WORKSPACE": str(ws), **bound},
                             shell=("sh", "-c"), cwd=ws)
            elif st.startswith("stash name:"):
                name, includes = re.findall(r"'([^']*)'", st)[:2]
                self._stash(ws, name, includes)
            elif st.startswith("unstash "):
                self._unstash(ws, re.findall(r"'([^']*)'", st)[0])
            elif st.startswith(("junit ", "archiveArtifacts ")):
                pattern = re.findall(r"(?:testResults|artifacts): '([^']*)'", st)[0]
                if not globmod.glob(str(ws / pattern), recursive=True):
                    raise CIError(f"{where}: {st.split()[0]}: nothing matches {pattern}")
            else:
                raise CIError(f"{where}: a step the test runner does not know: {st}")

    def _when(self, line: str) -> bool:
        if "changeRequest()" in line:
            return False
        if "not { triggeredBy 'TimerTrigger' }" in line:
            if self.timer:
                return False
            line = line.replace("not { triggeredBy 'TimerTrigger' };", "")
        elif "triggeredBy 'TimerTrigger'" in line:
            return self.timer
        branches = re.findall(r"branch '([^']*)'", line)
        tags = re.findall(r"tag pattern: '([^']*)', comparator: 'GLOB'", line)
        if not branches and not tags:
            raise CIError(f"a when condition the test runner does not know: {line}")
        return bool((self.branch and self.branch in branches)
                    or (self.tag and any(fnmatch.fnmatchcase(self.tag, t) for t in tags)))

    def _bind(self, line: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for cid, user_var, pass_var in _CRED_USER.findall(line):
            if cid not in self.credentials:
                raise CIError(f"withCredentials: no credential with id {cid}")
            out[user_var], out[pass_var] = self.credentials[cid]
        for cid, var in _CRED_STRING.findall(line):
            if cid not in self.credentials:
                raise CIError(f"withCredentials: no credential with id {cid}")
            out[var] = self.credentials[cid]
        return out

    def _stash(self, ws: Path, name: str, includes: str) -> None:
        dest = self.stashes / name
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        for found in globmod.glob(str(ws / includes), recursive=True):   # Ant-style: ** is every file below
            path = Path(found)
            if path.is_file():
                rel = path.relative_to(ws)
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest / rel)
        if not any(dest.rglob("*")):
            raise CIError(f"stash {name}: nothing matches {includes}")

    def _unstash(self, ws: Path, name: str) -> None:
        if not (self.stashes / name).exists():
            raise CIError(f"unstash {name}: no such stash")
        shutil.copytree(self.stashes / name, ws, dirs_exist_ok=True)
        self.host.runner.own(ws)


def copy_checkout(root: Path, dest: Path) -> None:
    """The repository's tracked files (what actions/checkout gives), into ``dest``."""
    files = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=False)
    names = [n for n in files.stdout.decode().split("\0") if n] if files.returncode == 0 else []
    if not names:   # not a git checkout: the tree without local state
        shutil.copytree(root, dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".git", ".nox", ".pipeline", "dist", "__pycache__"))
        return
    for name in names:
        src = root / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


# --------------------------------------------------------------------------- GitLab CI (gitlab-ci-local)


def gitlab_local(host: Host, text: str, gitlab_ci_local: Path, *, tag: str,
                 variables: Mapping[str, str]) -> tuple[StepLog, Path]:
    """The whole pipeline of ``text`` for a push of ``tag``, under gitlab-ci-local's shell executor, as the
    runner user. CI/CD variables go through ``.gitlab-ci-local-variables.yml`` (0600), as masked project
    variables would; the workspace becomes a git repository, as a runner's checkout is."""
    ws = host.workspace("gitlab")
    (ws / ".nox").unlink()            # gitlab-ci-local copies tracked files into each job's own directory
    (ws / ".gitlab-ci.yml").write_text(text)
    var_file = ws / ".gitlab-ci-local-variables.yml"
    var_file.write_text(yaml.safe_dump(dict(variables)))
    var_file.chmod(0o600)
    host.runner.own(ws)
    git = "git -c user.email=ci@example.invalid -c user.name=ci"
    init = "" if (ws / ".git").exists() else "git init -q -b main && "
    host.sh("gitlab: checkout", f"{init}{git} add -A && ({git} commit -q -m release || true)", {},
            shell=("sh", "-c"), cwd=ws)
    # gitlab-ci-local says GITLAB_CI=false (so that scripts can tell) and names the checked-out branch; a
    # tag pipeline on GitLab says GITLAB_CI=true, CI_COMMIT_TAG, and has no CI_COMMIT_BRANCH
    tag_pipeline = (f"--variable GITLAB_CI=true --variable CI_COMMIT_TAG={tag} --variable CI_COMMIT_REF_NAME={tag}"
                    " --variable CI_COMMIT_BRANCH= --variable CI_PIPELINE_SOURCE=push")
    # each job in a copy of the checkout of its own (--shell-isolation), as on separate runners: the build
    # jobs of a matrix hand their digests to the merge job through artifacts only
    quiet = "GITLAB_CI,CI_COMMIT_REF_NAME,CI_COMMIT_BRANCH,CI_PIPELINE_SOURCE"
    ran = host.sh("gitlab-ci-local", f"{gitlab_ci_local} --force-shell-executor --shell-isolation"
                  f" --ignore-predefined-vars {quiet} {tag_pipeline}", {}, shell=("sh", "-c"), cwd=ws)
    return ran, ws
