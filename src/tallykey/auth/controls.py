"""The key controls' decision, taken by the verifier after a token's verdict passed:
rate limits first (`auth.rates`), then credits (`auth.credits`).

A token of an identity (SPEC §16) spends from the identity's pool and, when it has
credits of its own, from those too: a request passes only if both have enough. The pool
is spent first; if the token's own credits then refuse, the pool gets its spend back."""

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
        if record.spends and not io:
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
        if not record.spends:
            return verdict
        pool: int | None = None
        if record.identity_has_credits:  # the identity's pool first (SPEC §16)
            spent = self.credits.spend_identity(record, cost, now)
            if isinstance(spent, TallykeyError):
                return spent
            pool = spent
        if not record.has_credits and record.plan_refill is None:
            return replace(verdict, identity_credits_remaining=pool)
        try:  # the token's own credits, else its plan's refill (SPEC §16)
            left = (self.credits.spend(record, cost, now) if record.has_credits
                    else self.credits.spend_plan(record, cost, now))
        except BaseException:
            if pool is not None:
                self._refund(record, cost, now)
            raise
        if isinstance(left, TallykeyError):
            if pool is not None:  # refused by the token's own credits: nothing is spent
                self._refund(record, cost, now)
            return left
        return replace(verdict, credits_remaining=left, identity_credits_remaining=pool)

    def _refund(self, record: TokenRecord, cost: int, now: float) -> None:
        try:
            self.credits.refund_identity(record, cost, now)
        except TallykeyError:
            log.warning("could not give %d credits back to identity %s (the store went "
                        "away)", cost, record.identity_id)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
