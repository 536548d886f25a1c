"""One meaning per refusal reason in every client: every reason of the server
(`tallykey.errors`) is in the Python client's exception table (`tallykey.client.REFUSALS`)
and in the TypeScript client's `REASONS` (clients/typescript/src/reasons.ts); both tables
name the same reasons, and each reason means the same in both clients (the Python
exception's `code` is the TypeScript `kind`)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from tallykey import client as sdk
from tallykey import errors

REASONS_TS = Path(__file__).resolve().parents[2] / "clients" / "typescript" / "src" / "reasons.ts"


def server_reasons() -> set[str]:
    return {kind.reason for _, kind in inspect.getmembers(errors, inspect.isclass)
            if issubclass(kind, errors.TallykeyError) and kind.reason}


def typescript_table(name: str) -> dict[str, str]:
    """`export const NAME … = Object.freeze({ key: "value", … })` of reasons.ts."""
    source = REASONS_TS.read_text()
    block = re.search(rf"export const {name}\b[^=]*= Object\.freeze\(\{{(.*?)\}}\);", source,
                      re.DOTALL)
    assert block, f"{name} not found in {REASONS_TS}"
    pairs = re.findall(r"^\s*(\w+):\s*\"(\w+)\",?\s*$", block.group(1), re.MULTILINE)
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(pairs) == len(lines), f"unparsed lines in {name}: {lines}"
    return dict(pairs)


def test_every_server_reason_is_in_both_tables() -> None:
    reasons = server_reasons()
    assert {"revoked", "expired", "rate_limited", "usage_exhausted", "missing"} <= reasons
    assert not reasons - set(sdk.REFUSALS), "missing in tallykey.client.REFUSALS"
    assert not reasons - set(typescript_table("REASONS")), "missing in reasons.ts"


def test_each_reason_means_the_same_in_python_and_typescript() -> None:
    python = {reason: kind.code for reason, kind in sdk.REFUSALS.items()}
    assert typescript_table("REASONS") == python


def test_the_fallback_by_status_is_the_same() -> None:
    python = {str(status): kind.code for status, kind in sdk.BY_STATUS.items()}
    assert typescript_table("BY_STATUS") == python
