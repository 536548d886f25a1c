"""What a command runs in: a `Runtime` whose product errors become one line and an exit
code, and the actors a command acts as."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from sqlalchemy.exc import OperationalError

from tallykey.actor import Actor
from tallykey.cli.output import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_FORBIDDEN,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    err,
    fail,
)
from tallykey.db.engine import store_outage
from tallykey.errors import (
    KeyConfigError,
    OperationsError,
    SettingsError,
    StoreUnavailable,
    TallykeyError,
)
from tallykey.runtime import Runtime
from tallykey.settings import Settings, load_settings


def check_settings() -> Settings:
    """The settings, or one line per unknown or bad setting and exit 78 (EX_CONFIG)."""
    try:
        return load_settings()
    except SettingsError as error:
        for line in str(error).splitlines():
            err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_CONFIG) from None


def build_runtime() -> Runtime:
    """`Runtime.build()` with its configuration errors as one line and exit 78."""
    settings = check_settings()
    try:
        return Runtime.build(settings)
    except OperationsError as error:  # the platform's OpenAPI document (SPEC §15)
        fail(str(error), code=EXIT_CONFIG)
    except ValueError as error:  # e.g. TALLYKEY_SCOPES_FILE that cannot be used
        fail(f"invalid settings: {error}", code=EXIT_CONFIG)
    except KeyConfigError as error:  # an unreadable or wrong key-encryption key
        fail(error.message, error.hint, EXIT_CONFIG)
    except OSError as error:  # e.g. a data directory that cannot be created
        fail(f"cannot open the store: {error.strerror or error} "
             f"({error.filename or 'TALLYKEY_DATA_DIR'}).",
             "Check TALLYKEY_DATA_DIR (it must be writable) or TALLYKEY_DATABASE_URL.",
             EXIT_CONFIG)
    except TallykeyError as error:  # e.g. a scope catalog that cannot be read
        fail(error.message, error.hint, EXIT_CONFIG)


@contextmanager
def runtime() -> Iterator[Runtime]:
    """A runtime with an up-to-date schema; product errors become one line on stderr."""
    rt = build_runtime()
    try:
        rt.ensure_schema()
        yield rt
    except StoreUnavailable as error:
        fail(error.message, error.hint, EXIT_UNAVAILABLE)
    except TallykeyError as error:
        code = {404: EXIT_NOT_FOUND, 403: EXIT_FORBIDDEN}.get(error.status, EXIT_ERROR)
        fail(error.message, error.hint, code)
    except OperationalError as error:
        outage = store_outage(error)
        fail(outage.message if outage else "the database refused the command.",
             "Check TALLYKEY_DATABASE_URL or TALLYKEY_DATA_DIR.", EXIT_UNAVAILABLE)
    finally:
        rt.close()


def user_actor(rt: Runtime, account: str, email: str) -> Actor:
    account_id = rt.accounts.find_account(account).id
    user = rt.accounts.find_user(account_id, email)
    if not user.active:
        fail(f"user {user.email} is deactivated.")
    return Actor(account_id, user.id, user.role, user.email, None, "cli")


def operator_for_token(rt: Runtime, ref: str, account: str | None) -> tuple[Actor, str]:
    account_id, token_id = rt.tokens.locate(ref)
    if account is not None and rt.accounts.find_account(account).id != account_id:
        fail(f"No token {ref!r} in account {account!r}.", code=EXIT_NOT_FOUND)
    return Actor.operator(account_id), token_id
