"""The optional parts of the install: what a client-only install (`pip install tallykey`,
httpx alone) lacks for the embedded API and for the server, and the check each
server-side package makes when it is imported."""

from __future__ import annotations

from importlib.util import find_spec

from tallykey.errors import ServerExtraMissing

#: What a client-only install lacks for the embedded names: the verifier and middleware
#: need only the embedded extra (the server extra has it too).
EMBEDDED_EXTRA = ("pip install 'tallykey[embedded]' "
                  "(or pip install 'tallykey[server]' for the whole server)")
SERVER_EXTRA = "pip install 'tallykey[server]'"


def require_extra(package: str, modules: tuple[str, ...], install: str) -> None:
    """At the import of a server-side package (`tallykey.auth`, `tallykey.api`): the same
    one line as `from tallykey import Verifier` when a package it needs is missing."""
    for module in modules:
        if find_spec(module) is None:
            raise ServerExtraMissing(f"{package} needs {module}, which is not installed: "
                                     f"{install}", name=module)
