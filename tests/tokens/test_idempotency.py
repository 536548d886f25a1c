"""`IdempotencyStore.run`, the one way a claimed key's operation runs (the API's
`Idempotency-Key`, the console's create, rotate and renew forms), on a real store."""

from __future__ import annotations

import pytest

from tallykey.runtime import Runtime
from tallykey.tokens.idempotency import Claim, IdempotencyStore, Replay, fingerprint

CREDENTIAL = "session-cookie"


def claim(store: IdempotencyStore, key: str, body: object) -> Claim | Replay:
    return store.begin("acct", "user:u1", key, "op", fingerprint("op", body), CREDENTIAL)


def test_a_failed_operation_frees_its_key_and_stores_nothing(rt: Runtime) -> None:
    store = IdempotencyStore(rt.database, rt.clock)
    first = claim(store, "k-1", {"n": 1})
    assert isinstance(first, Claim)

    def fails() -> str:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        store.run(first, CREDENTIAL, fails, 201, lambda done: (None, {"x": done}))
    again = claim(store, "k-1", {"n": 2})  # the key is free: a corrected request uses it
    assert isinstance(again, Claim)


def test_a_finished_operation_runs_once_and_repeats_get_its_answer(rt: Runtime) -> None:
    store = IdempotencyStore(rt.database, rt.clock)
    first = claim(store, "k-2", {"n": 1})
    assert isinstance(first, Claim)
    runs: list[int] = []

    def works() -> str:
        runs.append(1)
        return "tok_1"

    assert store.run(first, CREDENTIAL, works, 201,
                     lambda done: (done, {"id": done})) == "tok_1"
    repeat = claim(store, "k-2", {"n": 1})
    assert isinstance(repeat, Replay)
    assert (repeat.status_code, repeat.token_id, repeat.answer) == (201, "tok_1",
                                                                     {"id": "tok_1"})
    assert runs == [1]
