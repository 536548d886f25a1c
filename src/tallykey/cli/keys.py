"""`tallykey keys check|rotate`: the key-encryption keys of retrievable secrets."""

from __future__ import annotations

import typer

from tallykey.cli.context import runtime
from tallykey.cli.output import err, fail, out

keys_app = typer.Typer(help="Key-encryption keys for retrievable secrets.",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


@keys_app.command("check")
def keys_check() -> None:
    """Open every stored data key with the configured key-encryption keys."""
    with runtime() as rt:
        rt.check_keys()
        count = rt.vault.check() if rt.vault else 0
        current = rt.vault.keyring.current_id if rt.vault else None
    out.print(f"ok: {count} data key(s) open; current key-encryption key: {current or 'none'}")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every data key under the current (first) key of TALLYKEY_KEK. Keep the old
    key listed after it until this finishes; an interrupted run resumes where it stopped."""
    with runtime() as rt:
        if rt.vault is None:
            fail("no key-encryption key is configured.",
                 "Set TALLYKEY_KEK=\"new-id:<base64>,old-id:<base64>\" and run again.")
        rewrapped = rt.vault.rotate(lambda done, total: err.print(
            f"re-wrapped {done}/{total}", highlight=False))
        resealed = rt.webhooks.reseal()
        current = rt.vault.keyring.current_id
    out.print(f"done: {rewrapped} data key(s) re-wrapped and {resealed} webhook "
              f"endpoint(s) re-sealed under {current!r}; "
              "the old key can now be removed from TALLYKEY_KEK.")
