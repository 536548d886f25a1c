"""Scopes from the platform's OpenAPI document (`TALLYKEY_OPENAPI_FILE`, SPEC §15).

Each operation says what it needs in the document itself:

    paths:
      /shops/{shop}/orders:
        get:
          security: [{tallykey: ["orders:read"]}]

`OperationTable.load` reads the document once at start, checks every scope it names
against the scope catalog and compiles the route table; a bad document is one line
(`OperationsError`). Per request, `decide` is a dict lookup for a path without
parameters and one precompiled regex per template of the same segment count otherwise.

The rules, from OpenAPI's meaning of `security` (the operation's, else the document's):
- an alternative `{tallykey: [scopes]}`: a valid token holding all those scopes;
- `security: []` or an empty alternative `{}`: public, no token needed;
- neither (no security at all, or only other schemes): a valid token, no particular scope;
- more than one `tallykey` alternative: refused at start (tallykey checks one list).
A HEAD request falls back to the GET operation. Paths are matched after
percent-decoding (a gateway's `X-Original-URI` is raw), with each `servers` base path;
dot segments (`/a/../b`) are refused, since the app may resolve them to another route.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tallykey.accounts.scopes import ScopeCatalog
from tallykey.errors import MalformedHeader, OperationsError, TallykeyError, UnknownOperation

#: The security scheme name whose scopes tallykey enforces.
SCHEME = "tallykey"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PARAMETER = re.compile(r"\{[^{}/]+\}")


@dataclass(frozen=True, slots=True)
class Operation:
    """What one operation needs: `public` (no token), else a token holding `scopes`."""

    method: str
    template: str
    scopes: tuple[str, ...] = ()
    public: bool = False


class OperationTable:
    """The document's operations, compiled for lookups by method and path."""

    def __init__(self, operations: list[Operation], unlisted_allowed: bool = False,
                 source: str = "") -> None:
        self.source = source
        self.unlisted_allowed = unlisted_allowed
        self.count = len(operations)
        self._exact: dict[str, dict[str, Operation]] = {}
        templated: dict[str, dict[str, Operation]] = {}
        for operation in operations:
            if _PARAMETER.search(operation.template):
                templated.setdefault(operation.template, {})[operation.method] = operation
            else:
                self._exact.setdefault(operation.template, {})[operation.method] = operation
        # per segment count, the most literal segments first (`/orders/mine` before
        # `/orders/{id}`), then the document's order
        buckets: dict[int, list[tuple[int, int, re.Pattern[str], dict[str, Operation]]]] = {}
        for order, (template, methods) in enumerate(templated.items()):
            segments = template.split("/")
            literal = sum(1 for s in segments if not _PARAMETER.search(s))
            buckets.setdefault(len(segments), []).append(
                (-literal, order, _compile(template), methods))
        self._templated = {count: tuple((pattern, methods) for _, _, pattern, methods
                                        in sorted(found, key=lambda e: (e[0], e[1])))
                           for count, found in buckets.items()}

    @classmethod
    def load(cls, path: Path | str, catalog: ScopeCatalog,
             unlisted: str = "refuse") -> OperationTable:
        """The table of the document in `path`; `OperationsError` (one line) if it cannot
        be read, is not an OpenAPI document, or names a scope the catalog lacks."""
        where = f"TALLYKEY_OPENAPI_FILE {str(path)!r}"
        document = _read(Path(path), where)
        return cls(_operations(document, catalog, where), unlisted == "allow", str(path))

    def find(self, method: str, path: str) -> Operation | None:
        """The operation for a decoded path, or None when the document does not list it."""
        methods = self._exact.get(path)
        if methods is None:
            for pattern, candidate in self._templated.get(path.count("/") + 1, ()):
                if pattern.fullmatch(path):
                    methods = candidate
                    break
            else:
                return None
        found = methods.get(method)
        if found is None and method == "HEAD":
            found = methods.get("GET")
        return found

    def decide(self, method: str, target: str, raw: bool = True) -> Operation | TallykeyError:
        """The operation a request is for, or why it is refused: `target` is the path
        (with or without its query string) as the gateway sent it (`raw`, percent-encoded)
        or as an ASGI server decoded it."""
        path = target.split("?", 1)[0] if "?" in target else target
        if raw and "%" in path:
            path = unquote(path)
        if "/." in path and any(s in (".", "..") for s in path.split("/")):
            return MalformedHeader(
                "The request path has dot segments ('.' or '..').",
                "Send the path without them: tallykey decides by the operation it names.")
        found = self.find(method.upper(), path)
        if found is not None:
            return found
        if self.unlisted_allowed:
            return Operation(method.upper(), path)
        return UnknownOperation(
            f"{method.upper()} {path[:200]} is not an operation of this API.",
            "Check the method and the path against the API's documentation.")


def _compile(template: str) -> re.Pattern[str]:
    parts = _PARAMETER.split(template)
    return re.compile("[^/]+".join(re.escape(part) for part in parts))


def _read(path: Path, where: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise OperationsError(f"{where} cannot be read: {error.strerror or error}.") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise OperationsError(f"{where} is not UTF-8 text.") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ModuleNotFoundError:
            raise OperationsError(f"{where} is YAML, and PyYAML is not installed: "
                                  "pip install pyyaml, or give the JSON document.") from None
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            problem = " ".join(str(error).split())
            raise OperationsError(f"{where} is not valid YAML: {problem}.") from None
    else:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise OperationsError(f"{where} is not valid JSON: {error}.") from None
    if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
        raise OperationsError(f"{where} is not an OpenAPI document: it has no 'paths' "
                              "object.")
    if not str(document.get("openapi", document.get("swagger", ""))).startswith(("3", "2")):
        raise OperationsError(f"{where} does not say which OpenAPI version it is "
                              "('openapi': '3.x').")
    return document


def _base_paths(document: dict[str, Any]) -> list[str]:
    servers = document.get("servers")
    bases = []
    if isinstance(servers, list):
        for server in servers:
            url = server.get("url") if isinstance(server, dict) else None
            if isinstance(url, str) and "{" not in url:
                bases.append(urlsplit(url).path.rstrip("/"))
    return sorted(set(bases)) or [""]


def _operations(document: dict[str, Any], catalog: ScopeCatalog,
                where: str) -> list[Operation]:
    default = document.get("security")
    operations: list[Operation] = []
    for template, item in document["paths"].items():
        if not isinstance(template, str) or not template.startswith("/"):
            raise OperationsError(f"{where}: path {template!r} does not start with '/'.")
        if not isinstance(item, dict):
            raise OperationsError(f"{where}: path {template!r} is not an object.")
        for method in METHODS:
            spec = item.get(method)
            if spec is None:
                continue
            label = f"{where}: {method.upper()} {template}"
            if not isinstance(spec, dict):
                raise OperationsError(f"{label} is not an object.")
            scopes, public = _requirement(spec.get("security", default), label)
            unknown = catalog.unknown(scopes)
            if unknown:
                raise OperationsError(
                    f"{label} needs scope {unknown[0]!r}, which the scope catalog "
                    f"({catalog.source}) does not have; add it to TALLYKEY_SCOPES_FILE "
                    "or correct the document.")
            for base in _base_paths(document):
                operations.append(Operation(method.upper(), base + template, scopes,
                                            public))
    if not operations:
        raise OperationsError(f"{where} lists no operations.")
    return operations


def _requirement(security: Any, label: str) -> tuple[tuple[str, ...], bool]:
    """(scopes, public) from an operation's security requirements."""
    if security is None:
        return (), False
    if not isinstance(security, list):
        raise OperationsError(f"{label}: 'security' must be a list of requirement "
                              "objects.")
    if not security:
        return (), True
    found: list[tuple[str, ...]] = []
    public = False
    for alternative in security:
        if not isinstance(alternative, dict):
            raise OperationsError(f"{label}: each 'security' entry must be an object such "
                                  f'as {{"{SCHEME}": ["orders:read"]}}.')
        if not alternative:
            public = True
        if SCHEME in alternative:
            scopes = alternative[SCHEME]
            if not isinstance(scopes, list) or not all(isinstance(s, str) and s.strip()
                                                       and " " not in s for s in scopes):
                raise OperationsError(f"{label}: the '{SCHEME}' requirement must be a "
                                      "list of scope names.")
            found.append(tuple(dict.fromkeys(scopes)))
    if len(found) > 1:
        raise OperationsError(f"{label} has {len(found)} '{SCHEME}' alternatives; tallykey "
                              "checks one list of scopes per operation.")
    if public:
        return (), True
    return (found[0] if found else ()), False
