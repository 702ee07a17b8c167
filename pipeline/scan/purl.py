"""Pure: parse package URLs and match one against a constraint, as Trivy's ignore file does.

``pkg:type/namespace/name@version?qualifiers#subpath`` (package-url spec). A
constraint matches a package when type, namespace and name are equal, its
version (when given) is equal, its subpath (when given) is equal, and each of
its qualifiers is present on the package with the same value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote


class PurlError(ValueError):
    pass


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
    if not sep or not typ or not path:
        raise PurlError(f"'{text}' has no type/name")
    version = ""
    if "@" in path:
        path, version = path.rsplit("@", 1)
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    if not parts:
        raise PurlError(f"'{text}' has no name")
    qualifiers: dict[str, str] = {}
    for pair in filter(None, query.split("&")):
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise PurlError(f"'{text}': qualifier '{pair}' is not key=value")
        qualifiers[key.lower()] = unquote(value)
    return Purl(type=typ.lower(), name=parts[-1], namespace="/".join(parts[:-1]), version=unquote(version),
                qualifiers=qualifiers, subpath=unquote(subpath.strip("/")))
