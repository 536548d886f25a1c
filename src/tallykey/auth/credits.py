"""Usage credits (SPEC §13): each admitted request spends its cost from the token's
`credits_remaining` in one conditional UPDATE, so no request ever passes beyond the
credits, however many nodes and concurrent requests there are. A refill sets the
credits back to its amount at the first spend of each new period (00:00 UTC daily, or
the 1st of the month).

Credits are the one key control that costs a round trip to the store on every request
(rate limits are leased in blocks, see `auth.rates`): exactness needs one writer.
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


#: Spend `cost` from an identity's pool (SPEC §16), refilled first if a new period began:
#: the same conditional UPDATE as a token's, on the identity's row, so every token of
#: the identity, on every node, draws on one balance and none passes beyond it.
_SPEND_IDENTITY = """
UPDATE identities SET
  credits_remaining = BALANCE - CAST(:cost AS INTEGER),
  credits_period = CASE WHEN credits_refill_amount IS NULL THEN credits_period
                        ELSE PERIOD END
WHERE id = :identity_id AND credits_remaining IS NOT NULL
  AND BALANCE >= CAST(:cost AS INTEGER)
RETURNING credits_remaining
""".replace("BALANCE", _BALANCE).replace("PERIOD", _PERIOD)

#: Give back what a request spent from its identity's pool when the token's own credits
#: then refused it (only within the same refill period: a refill since set it anew).
_REFUND_IDENTITY = """
UPDATE identities SET credits_remaining = credits_remaining + CAST(:cost AS INTEGER)
WHERE id = :identity_id AND credits_remaining IS NOT NULL
  AND (credits_refill_amount IS NULL OR credits_period = PERIOD)
""".replace("PERIOD", _PERIOD)


#: Spend `cost` from the credits a token's plan gives it (SPEC §16): `:amount` per period,
#: kept on the last token of its renewal chain (as `_SPEND`); a new period (or a lowered
#: amount) starts from the plan's amount.
_PLAN_BALANCE = """(CASE WHEN plan_credits_remaining IS NULL OR plan_credits_period IS NULL
                     OR plan_credits_period <> CAST(:period AS INTEGER)
                     OR plan_credits_remaining > CAST(:amount AS BIGINT)
                THEN CAST(:amount AS BIGINT) ELSE plan_credits_remaining END)"""
_SPEND_PLAN = """
WITH RECURSIVE chain(id, next, depth) AS (
  SELECT id, successor_id, 0 FROM tokens WHERE id = :token_id
  UNION ALL
  SELECT t.id, t.successor_id, c.depth + 1 FROM tokens t JOIN chain c ON t.id = c.next
  WHERE c.depth < 64
)
UPDATE tokens SET
  plan_credits_remaining = BALANCE - CAST(:cost AS INTEGER),
  plan_credits_period = CAST(:period AS INTEGER)
WHERE id = (SELECT id FROM chain WHERE next IS NULL) AND successor_id IS NULL
  AND BALANCE >= CAST(:cost AS INTEGER)
RETURNING plan_credits_remaining
""".replace("BALANCE", _PLAN_BALANCE)


class CreditLedger:
    """Spends credits in the token store (one statement on the lookup's connections)."""

    def __init__(self, lookup: RecordLookup) -> None:
        self.lookup = lookup
        self._sql = lookup.dialect_sql(_SPEND)
        self._identity_sql = lookup.dialect_sql(_SPEND_IDENTITY)
        self._refund_sql = lookup.dialect_sql(_REFUND_IDENTITY)
        self._plan_sql = lookup.dialect_sql(_SPEND_PLAN)
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

    def spend_plan(self, record: TokenRecord, cost: int, now: float) -> int | UsageExhausted:
        """As `spend`, from the credits the token's plan refills each period (the token
        has none of its own)."""
        refill = record.plan_refill
        assert refill is not None
        period = period_of(refill.interval, now)
        params = {"cost": cost, "amount": refill.amount, "period": period,
                  "token_id": record.token_id}
        rows = self.lookup.run(self._plan_sql, params)
        if not rows and self._retry:  # the holder may have been renewed under this spend
            rows = self.lookup.run(self._plan_sql, params)
        if rows:
            return int(rows[0][0])
        refill_at = period_start(refill.interval, period + 1)
        wait = max(1, math.ceil(refill_at.timestamp() - now))
        return UsageExhausted(
            f"This token's plan credits for this period are used up ({refill.amount} per "
            f"{'day' if refill.interval == 'daily' else 'month'}): this request costs "
            f"{cost}.", f"The credits refill at {refill_at.isoformat()} (Retry-After: "
            f"{wait} s), or ask an administrator for a larger plan.", retry_after=wait,
            refill_at=refill_at.isoformat(), plan_id=record.plan_id)

    def spend_identity(self, record: TokenRecord, cost: int,
                       now: float) -> int | UsageExhausted:
        """The credits left in the pool of the token's identity after spending `cost`, or
        the refusal when fewer are left. Blocks on the store; raises `StoreUnavailable`."""
        assert record.identity_id is not None
        rows = self.lookup.run(self._identity_sql, self._params(record, cost, now))
        if rows:
            return int(rows[0][0])
        message = (f"The usage credits of this token's identity are used up: this request "
                   f"costs {cost}.")
        refill = record.identity_refill
        if refill is None:
            return UsageExhausted(message, "Ask an administrator to add credits to the "
                                  "identity.", identity_id=record.identity_id)
        refill_at = period_start(refill.interval, period_of(refill.interval, now) + 1)
        wait = max(1, math.ceil(refill_at.timestamp() - now))
        return UsageExhausted(message, f"The identity's credits refill at "
                              f"{refill_at.isoformat()} (Retry-After: {wait} s).",
                              retry_after=wait, refill_at=refill_at.isoformat(),
                              identity_id=record.identity_id)

    def refund_identity(self, record: TokenRecord, cost: int, now: float) -> None:
        """Give `cost` back to the identity's pool (the request was refused after it was
        spent). Blocks on the store; raises `StoreUnavailable`."""
        self.lookup.run_write(self._refund_sql, self._params(record, cost, now))

    @staticmethod
    def _params(record: TokenRecord, cost: int, now: float) -> dict[str, object]:
        return {"cost": cost, "daily": period_of("daily", now),
                "monthly": period_of("monthly", now), "identity_id": record.identity_id}
