"""Usage credits (SPEC §13): each admitted request spends its cost from the token's
`credits_remaining` in one conditional UPDATE, so no request ever passes beyond the
credits, however many nodes and concurrent requests there are. A refill sets the
credits back to its amount at the first spend of each new period (00:00 UTC daily, or
the 1st of the month).

Credits are the one key control that costs a round trip to the store on every request
(rate limits are leased in blocks, see `controls.rates`): exactness needs one writer.
A renewal moves the credits to the successor (see `_SPEND`): during the grace period the
old and the new secret spend from one balance, never from two copies.
"""

from __future__ import annotations

import math

from tallykey.auth.lookup import RecordLookup
from tallykey.auth.record import TokenRecord
from tallykey.controls.rules import period_of, period_start
from tallykey.errors import UsageExhausted

#: Spend `cost` from the credits of the current period (refilled first if a new period
#: began since the last spend), only if that many are left. The credits are those of the
#: last token of the renewal chain: a renewal moves the balance to the successor, and the
#: renewed token's secrets (in their grace period) spend from the successor's, so both
#: draw on one balance. A token renewed meanwhile is no longer the holder: the statement
#: then changes nothing (PostgreSQL re-checks `successor_id` on the locked row), and the
#: ledger asks again.
_PERIOD = ("(CASE WHEN credits_refill_interval = 'monthly' THEN CAST(:monthly AS INTEGER) "
           "ELSE CAST(:daily AS INTEGER) END)")
_BALANCE = """(CASE WHEN credits_refill_amount IS NOT NULL
                AND (credits_period IS NULL OR credits_period < PERIOD)
                THEN credits_refill_amount ELSE credits_remaining END)"""
_SPEND = """
WITH RECURSIVE chain(id, next, depth) AS (
  SELECT id, successor_id, 0 FROM tokens WHERE id = :token_id
  UNION ALL
  SELECT t.id, t.successor_id, c.depth + 1 FROM tokens t JOIN chain c ON t.id = c.next
  WHERE c.depth < 64
)
UPDATE tokens SET
  credits_remaining = BALANCE - CAST(:cost AS INTEGER),
  credits_period = CASE WHEN credits_refill_amount IS NULL THEN credits_period
                        ELSE PERIOD END
WHERE id = (SELECT id FROM chain WHERE next IS NULL) AND successor_id IS NULL
  AND credits_remaining IS NOT NULL AND BALANCE >= CAST(:cost AS INTEGER)
RETURNING credits_remaining
""".replace("BALANCE", _BALANCE).replace("PERIOD", _PERIOD)


class CreditLedger:
    """Spends credits in the token store (one statement on the lookup's connections)."""

    def __init__(self, lookup: RecordLookup) -> None:
        self.lookup = lookup
        self._sql = lookup.dialect_sql(_SPEND)
        #: SQLite runs the statement under one write lock: no renewal can slip in.
        self._retry = lookup.database.dialect != "sqlite"

    def spend(self, record: TokenRecord, cost: int, now: float) -> int | UsageExhausted:
        """The credits left after spending `cost`, or the refusal when fewer are left.
        Blocks on the store (call it off the event loop); raises `StoreUnavailable`."""
        params = {"cost": cost, "daily": period_of("daily", now),
                  "monthly": period_of("monthly", now), "token_id": record.token_id}
        rows = self.lookup.run(self._sql, params)
        if not rows and self._retry:  # the holder may have been renewed under this spend
            rows = self.lookup.run(self._sql, params)
        if rows:
            return int(rows[0][0])
        period = period_of(record.refill.interval, now) if record.refill else 0
        message = f"This token's usage credits are used up: this request costs {cost}."
        if record.refill is None:
            return UsageExhausted(message, "Ask an administrator to add credits to this "
                                  "token.")
        refill_at = period_start(record.refill.interval, period + 1)
        wait = max(1, math.ceil(refill_at.timestamp() - now))
        return UsageExhausted(message, f"The credits refill at {refill_at.isoformat()} "
                              f"(Retry-After: {wait} s).", retry_after=wait,
                              refill_at=refill_at.isoformat())
