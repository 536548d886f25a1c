"""What a command runs in: a `Runtime` whose product errors become one line and an exit
code, and the actors a command acts as."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import OperationalError

from tallykey.actor import Actor
from tallykey.auth.operations import OperationsError
from tallykey.cli.output import EXIT_ERROR, EXIT_FORBIDDEN, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, fail
from tallykey.db.engine import store_outage
from tallykey.errors import StoreUnavailable, TallykeyError
from tallykey.runtime import Runtime

#: A configuration that cannot be used (sysexits' EX_CONFIG).
EXIT_CONFIG = 78


@contextmanager
def runtime() -> Iterator[Runtime]:
    """A runtime with an up-to-date schema; product errors become one line on stderr."""
    try:
        rt = Runtime.build()
    except OperationsError as error:  # the platform's OpenAPI document (SPEC §15)
        fail(str(error), code=EXIT_CONFIG)
    except ValueError as error:  # settings validation
        fail(f"invalid settings: {error}")
    except OSError as error:  # e.g. a data directory that cannot be created
        fail(f"cannot open the store: {error.strerror or error} "
             f"({error.filename or 'TALLYKEY_DATA_DIR'}).",
             "Check TALLYKEY_DATA_DIR (it must be writable) or TALLYKEY_DATABASE_URL.")
    except TallykeyError as error:  # e.g. an unreadable key-encryption key
        fail(error.message, error.hint)
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
