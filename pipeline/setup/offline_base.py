"""A small multi-platform base image for machines that cannot reach Docker Hub.

``FROM scratch`` plus a static busybox (``/bin/busybox`` and its applet links in ``/bin``),
``/etc/passwd`` and ``/etc/group`` with root, ``adduser``/``addgroup`` (small shell scripts in
``/usr/sbin``: Debian's static busybox lacks those applets) and a world-writable ``/tmp``.
The result is an OCI index (no provenance attestation) in a local OCI layout, built with
``docker buildx build --platform … --output type=oci,dest=DIR,tar=false`` (the default ``docker``
driver on the containerd image store builds several platforms in one call; the foreign ones run
their ``RUN`` steps under QEMU). BuildKit writes only that local layout. On the classic image
store, where the docker driver can write no file, each platform is pushed to the loopback registry
of builds and fetched from there into the layout by the project's client.

A release hands the layout to BuildKit as a named build context
(``--build-context NAME=oci-layout://DIR@sha256:…``, :func:`offline_base`), so nothing is pulled
from any registry for it. :func:`ensure_offline_base` also puts it into a registry, with the
project's own registry client (for tools that want a registry reference).

Re-runs are cheap: the layout lives under ``.pipeline/offline-base/<key12>``, where the key hashes
the busybox binaries, the Dockerfile, the /etc files and the platforms.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline import log
from pipeline.errors import ToolError
from pipeline.setup import toolchain
from pipeline.tools import proc
from pipeline.tools.oci import Layout, LayoutError

DEFAULT_REPOSITORY = "pipeline/offline-base"
DEFAULT_ROOT = Path(".pipeline/offline-base")
#: the name a release's Dockerfile uses for the base (``FROM <NAME>:<key12>``); BuildKit gets it as a
#: named build context, so the name is never resolved (``.invalid`` can never be a real registry)
CONTEXT_NAME = "offline-base.pipeline.invalid/busybox"
DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")
KEY_LABEL = "io.pipeline.offline-base.key"
#: build options that shape the image (part of the content key): an OCI index without attestations
BUILD_OPTIONS = ("--provenance=false", "--progress=plain")
BUILD_TIMEOUT_S = 1800

DOCKERFILE = """\
FROM scratch
ARG TARGETARCH
COPY ${TARGETARCH}/busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY rootfs/ /
RUN mkdir -p /tmp /root /home /sbin && chmod 1777 /tmp && chmod 0700 /root && ln -s /bin/busybox /sbin/nologin
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["/bin/sh"]
"""

ETC_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
ETC_GROUP = "root:x:0:\nnogroup:x:65533:\nnobody:x:65534:\n"

# Debian's static busybox is built without the adduser/addgroup applets: these scripts do
# what Alpine's (busybox) ones do for the options Dockerfiles use.
ADDGROUP = r"""#!/bin/sh
# addgroup [-g GID] [-S] GROUP | addgroup USER GROUP   (busybox-compatible subset)
die() { echo "addgroup: $*" >&2; exit 1; }
gid=""; system=""
while getopts "g:S" opt; do
  case "$opt" in
    g) gid="$OPTARG" ;;
    S) system=1 ;;
    *) die "usage: addgroup [-g GID] [-S] [USER] GROUP" ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: addgroup [-g GID] [-S] [USER] GROUP"
valid() { case "$1" in ""|-*|*[!A-Za-z0-9._-]*) return 1 ;; esac; }
touch /etc/group
if [ $# -eq 2 ]; then
  user="$1"; group="$2"
  valid "$user" || die "invalid user name '$user'"
  valid "$group" || die "invalid group name '$group'"
  grep -q "^$user:" /etc/passwd || die "unknown user $user"
  grep -q "^$group:" /etc/group || die "unknown group $group"
  awk -F: -v OFS=: -v g="$group" -v u="$user" '
    $1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) { print; next }
              $4 = ($4 == "" ? u : $4 "," u) }
    { print }' /etc/group > /etc/group.new && cat /etc/group.new > /etc/group && rm -f /etc/group.new
  exit 0
fi
group="$1"
valid "$group" || die "invalid group name '$group'"
grep -q "^$group:" /etc/group && die "group '$group' in use"
if [ -n "$gid" ]; then
  case "$gid" in ""|*[!0-9]*) die "invalid gid '$gid'" ;; esac
  awk -F: -v g="$gid" '$3 == g { f = 1 } END { exit !f }' /etc/group && die "gid '$gid' in use"
else
  if [ -n "$system" ]; then lo=100; hi=999; else lo=1000; hi=64999; fi
  gid=$(awk -F: -v lo="$lo" -v hi="$hi" '{ u[$3] = 1 }
        END { for (i = lo; i <= hi; i++) if (!(i in u)) { print i; exit } }' /etc/group)
  [ -n "$gid" ] || die "no free gid"
fi
echo "$group:x:$gid:" >> /etc/group
"""

ADDUSER = r"""#!/bin/sh
# adduser [-h DIR] [-g GECOS] [-s SHELL] [-G GROUP] [-S] [-D] [-H] [-u UID] [-k SKEL] USER [GROUP]
# (busybox-compatible subset; USER GROUP adds an existing user to a group)
die() { echo "adduser: $*" >&2; exit 1; }
home=""; gecos="Linux User,,,"; shell=""; group=""; system=""; nohome=""; uid=""; skel=/etc/skel
while getopts "h:g:s:G:SDHu:k:" opt; do
  case "$opt" in
    h) home="$OPTARG" ;;
    g) gecos="$OPTARG" ;;
    s) shell="$OPTARG" ;;
    G) group="$OPTARG" ;;
    S) system=1 ;;
    D) ;;
    H) nohome=1 ;;
    u) uid="$OPTARG" ;;
    k) skel="$OPTARG" ;;
    *) die "usage: adduser [-h DIR] [-g GECOS] [-s SHELL] [-G GROUP] [-S] [-D] [-H] [-u UID] USER [GROUP]" ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: adduser [OPTIONS] USER [GROUP]"
[ $# -eq 2 ] && exec addgroup "$1" "$2"
user="$1"
case "$user" in ""|-*|*[!A-Za-z0-9._-]*) die "invalid user name '$user'" ;; esac
touch /etc/passwd /etc/group
grep -q "^$user:" /etc/passwd && die "user '$user' in use"
if [ -n "$uid" ]; then
  case "$uid" in *[!0-9]*) die "invalid uid '$uid'" ;; esac
  awk -F: -v u="$uid" '$3 == u { f = 1 } END { exit !f }' /etc/passwd && die "uid '$uid' in use"
else
  if [ -n "$system" ]; then lo=100; hi=999; else lo=1000; hi=64999; fi
  uid=$(awk -F: -v lo="$lo" -v hi="$hi" '{ u[$3] = 1 }
        END { for (i = lo; i <= hi; i++) if (!(i in u)) { print i; exit } }' /etc/passwd)
  [ -n "$uid" ] || die "no free uid"
fi
if [ -z "$group" ]; then
  if [ -n "$system" ]; then
    group=nogroup
    grep -q "^nogroup:" /etc/group || addgroup -g 65533 nogroup || exit 1
  else
    group="$user"
    if awk -F: -v g="$uid" '$3 == g { f = 1 } END { exit !f }' /etc/group; then
      addgroup "$group" || exit 1
    else
      addgroup -g "$uid" "$group" || exit 1
    fi
  fi
fi
gid=$(awk -F: -v g="$group" '$1 == g { print $3; exit }' /etc/group)
[ -n "$gid" ] || die "unknown group $group"
[ -n "$home" ] || home="/home/$user"
[ -n "$shell" ] || { [ -n "$system" ] && shell=/sbin/nologin || shell=/bin/sh; }
echo "$user:x:$uid:$gid:$gecos:$home:$shell" >> /etc/passwd
[ -f /etc/shadow ] && echo "$user:!:$(( $(date +%s) / 86400 )):0:99999:7:::" >> /etc/shadow
if [ -z "$nohome" ] && [ ! -e "$home" ]; then
  mkdir -p "$home" || exit 1
  [ -d "$skel" ] && cp -a "$skel/." "$home/"
  chown -R "$uid:$gid" "$home" && chmod 0755 "$home"
fi
exit 0
"""

#: files under the image's / (path → (text, mode))
ROOTFS = {
    "etc/passwd": (ETC_PASSWD, 0o644),
    "etc/group": (ETC_GROUP, 0o644),
    "usr/sbin/addgroup": (ADDGROUP, 0o755),
    "usr/sbin/adduser": (ADDUSER, 0o755),
}

#: buildx TARGETARCH → Debian architecture (what :func:`toolchain.busybox_path` takes)
DPKG_ARCH = {"amd64": "amd64", "arm64": "arm64", "arm": "armhf", "386": "i386", "ppc64le": "ppc64el",
             "s390x": "s390x", "riscv64": "riscv64"}


def target_arch(platform: str) -> str:
    """``linux/arm64/v8`` → ``arm64`` (buildx's TARGETARCH)."""
    parts = platform.split("/")
    if len(parts) < 2 or parts[0] != "linux" or not parts[1]:
        raise ToolError(f"offline base: platform '{platform}' is not linux/<arch>", tool="buildx")
    return parts[1]


def content_key(busyboxes: dict[str, bytes], platforms: Sequence[str], dockerfile: str = DOCKERFILE,
                rootfs: dict[str, tuple[str, int]] | None = None) -> str:
    """sha256 over everything that goes into the image (pure)."""
    rootfs = ROOTFS if rootfs is None else rootfs
    h = hashlib.sha256()
    h.update(b"pipeline-offline-base/1\0")
    for p in sorted(platforms):
        h.update(p.encode() + b"\0")
    for arch in sorted(busyboxes):
        h.update(arch.encode() + b"\0" + hashlib.sha256(busyboxes[arch]).hexdigest().encode() + b"\0")
    h.update(hashlib.sha256(dockerfile.encode()).hexdigest().encode() + b"\0")
    h.update(" ".join(BUILD_OPTIONS).encode() + b"\0")
    for path in sorted(rootfs):
        text, mode = rootfs[path]
        h.update(f"{path}\0{mode:o}\0".encode() + hashlib.sha256(text.encode()).hexdigest().encode() + b"\0")
    return h.hexdigest()


def key_tag(key: str) -> str:
    return f"busybox-{key[:12]}"


def build_argv(context: Path, dest: Path, platforms: Sequence[str], metadata_file: Path, key: str) -> list[str]:
    """The ``docker buildx build`` command line (pure): the image goes to the OCI layout ``dest``."""
    return ["docker", "buildx", "build", "--builder", "default", "--platform", ",".join(platforms),
            *BUILD_OPTIONS, "--output", f"type=oci,dest={dest},tar=false", "--metadata-file", str(metadata_file),
            "--label", f"{KEY_LABEL}={key}", str(context)]


def push_argv(context: Path, ref: str, platform: str, metadata_file: Path, key: str) -> list[str]:
    """The command line for a builder that can only push (the docker driver on the classic image store):
    one platform, pushed to the build's loopback registry (pure)."""
    return ["docker", "buildx", "build", "--builder", "default", "--platform", platform, *BUILD_OPTIONS,
            "--output", f"type=image,name={ref},push=true,oci-mediatypes=true", "--metadata-file",
            str(metadata_file), "--label", f"{KEY_LABEL}={key}", str(context)]


def _build(context: Path, built: Path, platforms: Sequence[str], metadata: Path, key: str) -> str:
    """Build the base into the layout ``built``; its index digest. The containerd image store writes the
    layout itself; the classic store cannot write files, so each platform goes to the loopback registry
    of builds and our client fetches it into the layout, under an index made here."""
    import json

    from pipeline.setup import localregistry
    from pipeline.tools import docker, transfer
    from pipeline.tools.registry import Registry

    engine = docker.engine_info()
    if engine is None or engine.containerd_snapshotter:
        proc.run(build_argv(context, built, platforms, metadata, key), timeout=BUILD_TIMEOUT_S,
                 what="offline base: build into a local OCI layout")
        return Layout(built).root().digest
    inst = localregistry.build_loopback()
    layout = Layout.create(built)
    entries = []
    with Registry(inst.host, name="loopback", insecure=True) as loop:
        for platform in platforms:
            ref = f"{inst.host}/{DEFAULT_REPOSITORY}:{key_tag(key)}-{target_arch(platform)}"
            proc.run(push_argv(context, ref, platform, metadata, key), timeout=BUILD_TIMEOUT_S,
                     what=f"offline base: build {platform} (classic image store: through the loopback registry)")
            digest = json.loads(metadata.read_text()).get("containerimage.digest")
            if not isinstance(digest, str) or not digest.startswith("sha256:"):
                raise ToolError(f"offline base: buildx reported no image digest for {ref}", tool="buildx")
            transfer.pull(loop, DEFAULT_REPOSITORY, digest, layout)
            entries.append(layout.platform_entry(digest))
    return layout.put_index(entries)


def _busyboxes(platforms: Sequence[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for p in platforms:
        arch = target_arch(p)
        dpkg = DPKG_ARCH.get(arch, arch)
        path = toolchain.busybox_path(dpkg)
        try:
            out[arch] = path.read_bytes()
        except OSError:
            raise ToolError(f"offline base: no static busybox for {p} at {path}; run 'pipeline doctor --install' "
                            f"(fetches busybox-static:{dpkg})", tool="busybox") from None
    return out


@dataclass(frozen=True)
class OfflineBase:
    layout: Path        # the OCI layout holding the index
    digest: str         # the index digest
    name: str           # the FROM reference a build uses for it (a named build context)
    key: str

    @property
    def build_context(self) -> str:
        """``--build-context`` value: the name, served from the local layout by digest."""
        return f"{self.name}=oci-layout://{self.layout.resolve()}@{self.digest}"


def offline_base(platforms: Sequence[str] = DEFAULT_PLATFORMS, *, root: Path = DEFAULT_ROOT) -> OfflineBase:
    """The base image in a local OCI layout, built unless the layout of its key exists."""
    platforms = tuple(dict.fromkeys(platforms))
    if not platforms:
        raise ToolError("offline base: no platforms given", tool="buildx")
    bins = _busyboxes(platforms)
    key = content_key(bins, platforms)
    ktag = key_tag(key)
    dest = Path(root) / ktag
    logger = log.get().bind(key=ktag)
    layout = Layout(dest)
    if layout.exists():
        try:
            root_desc = layout.root()
            if not layout.missing(root_desc.digest):
                logger.debug("offline_base.found", layout=str(dest), digest=root_desc.digest)
                return OfflineBase(dest, root_desc.digest, f"{CONTEXT_NAME}:{ktag}", key)
        except LayoutError:
            pass
    started = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pipeline-offline-base-") as tmp, \
            tempfile.TemporaryDirectory(prefix=f".{ktag}-", dir=dest.parent) as out:
        ctx = Path(tmp) / "context"
        for arch, data in bins.items():
            (ctx / arch).mkdir(parents=True)
            (ctx / arch / "busybox").write_bytes(data)
            (ctx / arch / "busybox").chmod(0o755)
        for rel, (text, mode) in ROOTFS.items():
            path = ctx / "rootfs" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(mode)
        for d in sorted({p for rel in ROOTFS for p in (ctx / "rootfs" / rel).parents if ctx / "rootfs" in p.parents}):
            d.chmod(0o755)
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        metadata = Path(tmp) / "metadata.json"
        built = Path(out) / "layout"
        digest = _build(ctx, built, platforms, metadata, key)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(built, dest)
    logger.info("offline_base.built", layout=str(dest), digest=digest, platforms=list(platforms),
                seconds=round(time.monotonic() - started, 1))
    return OfflineBase(dest, digest, f"{CONTEXT_NAME}:{ktag}", key)


def ensure_offline_base(registry_host: str, repository: str = DEFAULT_REPOSITORY, *,
                        platforms: Sequence[str] = DEFAULT_PLATFORMS, tag: str = "busybox",
                        root: Path = DEFAULT_ROOT) -> str:
    """The base image put into a registry (with the project's registry client, credentials from the
    docker config) under ``tag`` and ``busybox-<key12>``; returns ``host/repo@sha256:…``."""
    from pipeline.tools import registry as oci
    from pipeline.tools import transfer

    base = offline_base(platforms, root=root)
    host, _, namespace = registry_host.strip("/").partition("/")
    repo = f"{namespace}/{repository}" if namespace else repository
    insecure = oci.loopback_host(host)
    creds = oci.credentials_from_docker_config(host, os.environ)
    layout = Layout(base.layout)
    body, media = layout.manifest(base.digest)
    with oci.Registry(host, insecure=insecure, credentials=creds) as reg:
        existing = reg.manifest_head(repo, key_tag(base.key))
        if existing is None or existing.digest != base.digest:
            transfer.push(layout, base.digest, reg, repo)
            for t in (tag, key_tag(base.key)):
                reg.manifest_put(repo, t, body, media)
            log.get().info("offline_base.pushed", image=f"{host}/{repo}", digest=base.digest)
    return f"{registry_host.rstrip('/')}/{repository}@{base.digest}"
