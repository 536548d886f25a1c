"""Which `TALLYKEY_*` settings each command reads, named at the end of its `--help`.

`name_settings(app)` walks every command (those added later by any module too) and gives
each an epilog "Settings it reads: …". A command not named in `READS` opens the store
like most commands do (`STORE`)."""

from __future__ import annotations

import typer

from tallykey.settings import Settings

#: What every command that opens the store reads (`Runtime.build`).
STORE = ("data_dir", "database_url", "db_connect_timeout", "db_statement_timeout",
         "db_pooler", "kek",
         "kek_file", "scopes_file", "region", "public_url", "targets", "argon2_profile")
#: A change that waits until every verification node applied it (`Propagator.settle`).
SETTLES = (*STORE, "propagation_timeout")
#: The background worker: mail, webhooks, reminders, clean-up, alerts.
WORKER = (*STORE, "smtp_url", "mail_from", "outbox_max_attempts", "worker_interval",
          "usage_retention_days", "webhook_private_targets", "alert_network_prefix_v4",
          "alert_network_prefix_v6", "alert_denied_threshold")
EVERY = tuple(Settings.model_fields)

#: Command path (as typed after `tallykey`) -> the settings it reads.
READS: dict[str, tuple[str, ...]] = {
    "serve": EVERY,
    "demo": EVERY,
    "worker": WORKER,
    "migrate": ("data_dir", "database_url", "db_connect_timeout", "db_statement_timeout"),
    "connect": ("regions", "data_dir"),
    "outbox list": (*STORE, "smtp_url"),
    "audit heads": (*STORE, "audit_signing_key"),
    "audit verify": (*STORE, "audit_signing_key"),
    **{f"tokens {verb}": SETTLES for verb in ("update", "revoke", "suspend", "resume",
                                              "rotate", "renew", "approve", "deny")},
    **{f"users {verb}": SETTLES for verb in ("activate", "deactivate", "set-role")},
    "workspaces archive": SETTLES,
}


def env_name(field: str) -> str:
    return f"TALLYKEY_{field.upper()}"


def epilog_for(path: str) -> str:
    names = READS.get(path, STORE)
    if names == EVERY:
        return ("Settings it reads: every TALLYKEY_ setting — "
                + ", ".join(env_name(n) for n in names) + ".")
    return "Settings it reads: " + ", ".join(env_name(n) for n in names) + "."


def name_settings(app: typer.Typer, prefix: str = "") -> None:
    """Give every command of `app` (and of its sub-apps) the epilog naming its settings."""
    for command in app.registered_commands:
        name = command.name or (command.callback.__name__.replace("_", "-")
                                if command.callback else "")
        if command.epilog is None:
            command.epilog = epilog_for(f"{prefix}{name}")
    for group in app.registered_groups:
        if group.typer_instance is not None:
            name_settings(group.typer_instance, f"{prefix}{group.name} ")
