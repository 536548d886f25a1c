"""Usage credits (SPEC §13): each admitted request spends its cost from the token's
`credits_remaining` in one conditional UPDATE, so no request ever passes beyond the
credits, however many nodes and concurrent requests there are. A refill sets the
credits back to its amount at the first spend of each new period (00:00 UTC daily, or
the 1st of the month).

Credits are the one key control that costs a round trip to the store on every request
(rate limits are leased in blocks, see `controls.rates`): exactness needs one writer.
"""

from __future__ import annotations

import math

from tallykey.auth.lookup import RecordLookup
from tallykey.auth.record import TokenRecord
from tallykey.controls.rules import period_of, period_start
from tallykey.errors import UsageExhausted

#: Spend `cost` from the credits of the current period (refilled first if a new period
#: began since the last spend), only if that many are left.
_SPEND = """
UPDATE tokens SET
  credits_remaining = (CASE WHEN credits_refill_amount IS NOT NULL
                            AND (credits_period IS NULL OR credits_period < :period)
                            THEN credits_refill_amount ELSE credits_remaining END) - :cost,
  credits_period = CASE WHEN credits_refill_amount IS NULL THEN credits_period
                        ELSE :period END
WHERE id = :token_id AND credits_remaining IS NOT NULL
  AND (CASE WHEN credits_refill_amount IS NOT NULL
            AND (credits_period IS NULL OR credits_period < :period)
            THEN credits_refill_amount ELSE credits_remaining END) >= :cost
RETURNING credits_remaining
"""


class CreditLedger:
    """Spends credits in the token store (one statement on the lookup's connections)."""

    def __init__(self, lookup: RecordLookup) -> None:
        self.lookup = lookup
        self._sql = lookup.dialect_sql(_SPEND)

    def spend(self, record: TokenRecord, cost: int, now: float) -> int | UsageExhausted:
        """The credits left after spending `cost`, or the refusal when fewer are left.
        Blocks on the store (call it off the event loop); raises `StoreUnavailable`."""
        period = period_of(record.refill.interval, now) if record.refill else 0
        rows = self.lookup.run(self._sql, {"cost": cost, "period": period,
                                           "token_id": record.token_id})
        if rows:
            return int(rows[0][0])
        message = f"This token's usage credits are used up: this request costs {cost}."
        if record.refill is None:
            return UsageExhausted(message, "Ask an administrator to add credits to this "
                                  "token.")
        refill_at = period_start(record.refill.interval, period + 1)
        wait = max(1, math.ceil(refill_at.timestamp() - now))
        return UsageExhausted(message, f"The credits refill at {refill_at.isoformat()} "
                              f"(Retry-After: {wait} s).", retry_after=wait,
                              refill_at=refill_at.isoformat())
