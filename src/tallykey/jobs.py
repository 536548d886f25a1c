"""The job runner: each pass schedules due reminders, applies the accounts' governance
(revokes tokens unused past `revoke_inactive_days`, after a warning; sends the weekly
digest), delivers what the outbox holds (`notify.delivery`), and prunes old usage counts
and sent messages. Run it as `tallykey worker` (any
number, on any node), or inside the embedded server with `start_background_worker`.

Time comes from the injected clock, so tests drive schedules and back-off without sleeping.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tallykey.clock import Clock
from tallykey.db.engine import Database
from tallykey.errors import StoreUnavailable
from tallykey.governance.digest import send_digests
from tallykey.governance.inactivity import sweep_inactive
from tallykey.keys.keyring import KeyRing, load_keyring
from tallykey.monitor.retention import prune_usage
from tallykey.notify import outbox
from tallykey.notify.delivery import DEFAULT_BATCH, Delivery
from tallykey.notify.models import EMAIL, WEBHOOK
from tallykey.notify.notices import Notifier
from tallykey.notify.reminders import schedule_reminders
from tallykey.notify.smtp import SmtpConfig, SmtpMailer
from tallykey.notify.webhooks import WebhookChannel
from tallykey.people.resets import unsealed
from tallykey.settings import Settings
from tallykey.tokens.service import TokenService

log = logging.getLogger(__name__)

#: Sent rows are kept this long (for `tallykey outbox list`, and as the record that stops
#: a reminder being sent twice: longer than the 90-day reminder horizon).
KEEP_SENT = timedelta(days=120)
PURGE_EVERY = timedelta(hours=1)


@dataclass
class PassReport:
    """What one pass did."""

    scheduled: int = 0
    #: Governance: tokens revoked for inactivity, and their warnings and digests enqueued.
    revoked_inactive: int = 0
    sent: int = 0
    retrying: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)


def worker_name() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """Schedules reminders and delivers the outbox. Without a mailer (no SMTP configured)
    mails are left pending in the outbox; webhooks are still delivered."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        *,
        notifier: Notifier,
        mailer: SmtpMailer | None = None,
        webhooks: WebhookChannel | None = None,
        max_attempts: int = outbox.DEFAULT_MAX_ATTEMPTS,
        batch_size: int = DEFAULT_BATCH,
        name: str | None = None,
        usage_retention_days: int | None = None,
        lease: timedelta = outbox.LEASE,
        private_webhook_targets: bool = False,
        tokens: TokenService | None = None,
        keyring: KeyRing | None = None,
    ) -> None:
        self.database = database
        self.clock = clock
        self.notifier = notifier
        channels: dict[str, outbox.Channel] = {}
        if mailer is not None:
            channels[EMAIL] = mailer
        self.webhooks = webhooks or WebhookChannel(database, clock,
                                                   allow_private=private_webhook_targets,
                                                   keyring=keyring)
        channels[WEBHOOK] = self.webhooks
        self.name = name or worker_name()
        #: Claims and delivers the outbox (mail's one-time links go in only as it leaves).
        self.delivery = Delivery(
            database, clock, channels, name=self.name, max_attempts=max_attempts,
            batch_size=batch_size, lease=lease,
            prepare={EMAIL: lambda message: unsealed(database, clock, message)})
        #: Per-hour usage older than this many days is pruned (None: kept).
        self.usage_retention_days = usage_retention_days
        self._purged_at: datetime | None = None
        #: Governance (the inactivity policy's revocations, the weekly digest) runs when
        #: the worker has the token service, as `from_settings` gives it.
        self.tokens = tokens

    @classmethod
    def from_settings(cls, database: Database, clock: Clock, settings: Settings,
                      notifier: Notifier | None = None) -> Worker:
        """A worker configured by `TALLYKEY_SMTP_URL`, `TALLYKEY_MAIL_FROM` and
        `TALLYKEY_OUTBOX_MAX_ATTEMPTS`; `ValueError` for a malformed SMTP URL."""
        mailer = (SmtpMailer(SmtpConfig.parse(settings.smtp_url), settings.mail_from)
                  if settings.smtp_url else None)
        notifier = notifier or Notifier(public_url=settings.public_url)
        tokens = TokenService(database, clock, region=settings.region,
                              listeners=[notifier.on_token_event])
        return cls(database, clock, notifier=notifier,
                   mailer=mailer, max_attempts=settings.outbox_max_attempts,
                   usage_retention_days=settings.usage_retention_days,
                   private_webhook_targets=settings.webhook_private_targets, tokens=tokens,
                   keyring=load_keyring(settings.kek, settings.kek_file))

    @property
    def channels(self) -> dict[str, outbox.Channel]:
        """The delivery channels by name (mail only with a mailer)."""
        return self.delivery.channels

    @property
    def sends_mail(self) -> bool:
        return EMAIL in self.channels

    def run_once(self, now: datetime | None = None) -> PassReport:
        """One pass at `now` (default: the clock's now): schedule, then deliver what is due."""
        fixed = now
        now = now or self.clock.now()
        report = PassReport()
        report.scheduled = schedule_reminders(self.database, self.notifier, now)
        if self.tokens is not None:
            inactive = sweep_inactive(self.database, self.tokens, self.notifier, now)
            report.revoked_inactive = inactive.revoked
            report.scheduled += inactive.warned
            if self.sends_mail:  # the digest is only a mail: never piled up unsent
                report.scheduled += send_digests(self.database, self.notifier, now)
        if self._purged_at is None or now - self._purged_at >= PURGE_EVERY:
            outbox.purge(self.database, now - KEEP_SENT)
            if self.usage_retention_days is not None:
                prune_usage(self.database, now, self.usage_retention_days)
            self._purged_at = now
        delivered = self.delivery.deliver_due(now, fixed)
        report.sent, report.retrying, report.dead = (delivered.sent, delivered.retrying,
                                                     delivered.dead)
        report.errors = delivered.errors
        return report

    def run(self, stop: threading.Event, interval: float = 5.0) -> None:
        """Pass after pass until `stop` is set; a failing pass is logged, never fatal."""
        log.info("notification worker %s started (mail: %s)", self.name,
                 "on" if self.sends_mail else "off, TALLYKEY_SMTP_URL is not set")
        while not stop.is_set():
            try:
                report = self.run_once()
                if report.sent or report.dead or report.retrying:
                    log.info("outbox: %d sent, %d to retry, %d dead", report.sent,
                             report.retrying, report.dead)
            except StoreUnavailable as error:
                log.warning("notification worker: %s Trying again.", error.message)
            except Exception:
                log.exception("notification worker pass failed; trying again")
            stop.wait(interval)
        log.info("notification worker %s stopped", self.name)

    def close(self) -> None:
        self.webhooks.close()


class BackgroundWorker:
    """A `Worker` looping in a daemon thread (the embedded server's default)."""

    def __init__(self, worker: Worker, interval: float) -> None:
        self.worker = worker
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=worker.run, args=(self._stop, interval),
                                        name="tallykey-notify", daemon=True)

    def start(self) -> BackgroundWorker:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to finish its pass and wait for it (at most `timeout` seconds)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.worker.close()


def start_background_worker(database: Database, clock: Clock, settings: Settings,
                            notifier: Notifier | None = None) -> BackgroundWorker:
    """Start the worker in a thread; call `.stop()` on shutdown. For `tallykey serve`:
    `start_background_worker(rt.database, rt.clock, rt.settings, rt.notifier)`."""
    worker = Worker.from_settings(database, clock, settings, notifier)
    return BackgroundWorker(worker, settings.worker_interval).start()
