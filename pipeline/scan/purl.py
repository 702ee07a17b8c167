"""Pure: parse package URLs and match one against a constraint, exactly as Trivy 0.59.1 does.

``pkg:type/namespace/name@version?qualifiers#subpath`` (package-url spec), parsed the way
packageurl-go v0.1.3 (``FromString``, which Trivy's ``pkg/purl`` wraps) parses it, because a
``.trivyignore.yaml`` ``purls:`` entry must match what Trivy matches:

* the type is lowercased and must look like one (``[A-Za-z.+-][0-9A-Za-z.+-]*``);
* the version is split at the last ``@`` of the last path segment; namespace, name and version are
  percent-decoded; slashes around the namespace are trimmed;
* type-specific normalisation: the namespace lowercased for alpm, apk, bitbucket, composer, deb,
  github, golang, npm, qpkg and rpm; the name for alpm, apk, bitbucket, bitnami, composer, deb, github,
  golang and npm; pypi names lowercased with ``_`` as ``-``;
* qualifiers decoded as form values (``+`` is a space), keys checked and lowercased, empty values
  dropped, a key given twice an error;
* the subpath trimmed of slashes; ``.`` or ``..`` segments are an error.

Hand-written on purpose: packageurl-python normalises with other tables (npm namespaces and
golang/deb/rpm kept as written, other types lowercased) and disagrees on ``?a``, ``+`` and duplicate
keys, so it would not match what Trivy matches.

A constraint matches a package when type, namespace and name are equal, its version (when given) is
equal, its subpath (when given) is equal, and each of its qualifiers is on the package with the same
value (Trivy's ``PackageURL.Match``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, unquote_plus


class PurlError(ValueError):
    pass


TYPE = re.compile(r"^[A-Za-z.+-][0-9A-Za-z.+-]*$")
QUALIFIER_KEY = re.compile(r"^[A-Za-z._-][0-9A-Za-z._-]*$")
LOWER_NAMESPACE = frozenset({"alpm", "apk", "bitbucket", "composer", "deb", "github", "golang", "npm", "qpkg",
                             "rpm"})
LOWER_NAME = frozenset({"alpm", "apk", "bitbucket", "bitnami", "composer", "deb", "github", "golang", "npm"})


@dataclass(frozen=True)
class Purl:
    type: str
    name: str
    namespace: str = ""
    version: str = ""
    qualifiers: dict[str, str] = field(default_factory=dict)
    subpath: str = ""

    def matches(self, target: Purl) -> bool:
        """Does ``target`` (a package's purl) satisfy this constraint?"""
        if (self.type, self.namespace, self.name) != (target.type, target.namespace, target.name):
            return False
        if self.version and self.version != target.version:
            return False
        if self.subpath and self.subpath != target.subpath:
            return False
        return all(target.qualifiers.get(k) == v for k, v in self.qualifiers.items())


def parse(text: str) -> Purl:
    raw = text.strip()
    if not raw.startswith("pkg:"):
        raise PurlError(f"'{text}' is not a package URL (it must start with 'pkg:')")
    rest = raw[4:].lstrip("/")
    rest, _, subpath = rest.partition("#")
    rest, _, query = rest.partition("?")
    typ, sep, path = rest.partition("/")
    if not sep or not typ or not path.strip("/"):
        raise PurlError(f"'{text}' has no type/name")
    if not TYPE.match(typ):
        raise PurlError(f"'{text}': '{typ}' is not a package type")
    typ = typ.lower()
    head, _, last = path.strip("/").rpartition("/")
    version = ""
    if "@" in last:
        last, version = last.rsplit("@", 1)
    if not last:
        raise PurlError(f"'{text}' has no name")
    namespace, name = unquote(head).strip("/"), unquote(last)
    if typ in LOWER_NAMESPACE:
        namespace = namespace.lower()
    if typ in LOWER_NAME:
        name = name.lower()
    elif typ == "pypi":
        name = name.lower().replace("_", "-")
    return Purl(type=typ, name=name, namespace=namespace, version=unquote(version),
                qualifiers=_qualifiers(text, query), subpath=_subpath(text, subpath))


def _qualifiers(text: str, query: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        if not QUALIFIER_KEY.match(key):
            raise PurlError(f"'{text}': '{key}' is not a qualifier key")
        key, value = key.lower(), unquote_plus(value)
        if key in out:
            raise PurlError(f"'{text}': the qualifier '{key}' is given twice")
        if value:
            out[key] = value
    return out


def _subpath(text: str, subpath: str) -> str:
    parts = subpath.strip("/").split("/") if subpath.strip("/") else []
    if any(p in (".", "..") for p in parts[1:]):
        raise PurlError(f"'{text}': the subpath may not hold '.' or '..'")
    return "/".join(unquote(p) for p in parts)
