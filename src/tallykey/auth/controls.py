"""The key controls' decision, taken by the verifier after a token's verdict passed:
rate limits first (`controls.rates`), then credits (`controls.credits`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from tallykey.auth.credits import CreditLedger
from tallykey.auth.lookup import RecordLookup
from tallykey.auth.rates import NEEDS_LEASE, RateCounter, RateView
from tallykey.auth.record import TokenRecord
from tallykey.auth.redis_link import RedisLink
from tallykey.auth.verdict import Verdict
from tallykey.errors import TallykeyError
from tallykey.settings import Settings

log = logging.getLogger(__name__)


class KeyControls:
    """Admits a request of a controlled token, or says why not."""

    def __init__(self, settings: Settings, lookup: RecordLookup,
                 clock: Callable[[], float]) -> None:
        self.link = (RedisLink(settings.redis_url, settings.redis_timeout)
                     if settings.redis_url else None)
        self.rates = RateCounter(self.link, settings.redis_failure == "open", clock)
        self.credits = CreditLedger(lookup)

    def rate_view(self, record: TokenRecord) -> RateView | None:
        return self.rates.view(record)

    def admit(self, record: TokenRecord, verdict: Verdict, now: float, cost: int,
              io: bool) -> Verdict | TallykeyError | None:
        """The verdict to answer with (credits left filled in), the refusal, or None
        when the decision needs the network and `io` is False (nothing was counted:
        call again with `io=True` off the event loop). With `io` it may raise
        `StoreUnavailable` (credits need the store)."""
        if record.has_credits and not io:
            return None
        rates = verdict.rates
        if rates is not None:
            outcome = self.rates.admit(rates, now)
            if outcome is NEEDS_LEASE:
                if not io:
                    return None
                outcome = self.rates.admit_remote(rates, now)
            if isinstance(outcome, TallykeyError):
                return outcome
        if not record.has_credits:
            return verdict
        left = self.credits.spend(record, cost, now)
        if isinstance(left, TallykeyError):
            return left
        return replace(verdict, credits_remaining=left)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
