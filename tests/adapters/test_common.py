"""The adapters' shared helpers: key ranges, the retry loop, shared clients (no backend needed)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from northstar_adapters.common import RetryPolicy, SharedClients, key_range, prefix_end, retrying

_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=6)


@given(prefix=_text, suffix=_text, other=_text)
def test_the_prefix_bound_covers_exactly_the_keys_with_the_prefix(
    prefix: str, suffix: str, other: str
) -> None:
    end = prefix_end(prefix)
    assert end is None or prefix + suffix < end
    if not other.startswith(prefix) and other >= prefix:
        assert end is not None and other >= end


@given(prefix=st.sampled_from(["\U0010ffff", "a\U0010ffff", "\ud7ff", ""]), suffix=_text)
def test_the_prefix_bound_handles_the_top_code_point_and_surrogates(prefix: str, suffix: str) -> None:
    end = prefix_end(prefix)
    assert end is None or (prefix + suffix < end and end.encode())
    assert prefix_end("a\U0010ffff") == "b" and prefix_end("\ud7ff") == "\ue000"


@given(
    keys=st.lists(_text, max_size=12),
    prefix=_text,
    after=st.none() | _text,
    before=st.none() | _text,
)
def test_a_key_range_holds_exactly_the_keys_a_query_selects(
    keys: list[str], prefix: str, after: str | None, before: str | None
) -> None:
    bounds = key_range(prefix, after, before)

    def inside(key: str) -> bool:
        if bounds.low is not None and (key < bounds.low or (key == bounds.low and not bounds.low_inclusive)):
            return False
        return bounds.high is None or key < bounds.high

    for key in keys:
        wanted = (
            key.startswith(prefix) and (after is None or key > after) and (before is None or key < before)
        )
        assert inside(key) == wanted, key
    if bounds.empty:
        assert not any(inside(key) for key in keys)


def test_the_tighter_bound_wins_each_way() -> None:
    assert key_range("s#") == ("s#", True, "s$")
    assert key_range("s#", after="s#0005") == ("s#0005", False, "s$")
    assert key_range("s#0", after="a") == ("s#0", True, "s#1")
    assert key_range("s#", before="s#0003") == ("s#", True, "s#0003")
    assert key_range("s#", before="t") == ("s#", True, "s$")
    assert key_range("") == (None, True, None)
    assert key_range("b", after="c").empty and not key_range("b").empty


# --- retries ------------------------------------------------------------------------------------


class Transient(Exception):
    pass


class Fatal(Exception):
    pass


class GaveUp(Exception):
    def __init__(self, attempts: int) -> None:
        super().__init__(attempts)
        self.attempts = attempts


def _judge(exc: BaseException, attempts: int) -> float:
    if isinstance(exc, Fatal):
        raise GaveUp(-attempts) from exc
    return 0.0


async def test_retrying_retries_transient_failures_with_bounded_full_jitter() -> None:
    delays: list[float] = []
    failures = iter([Transient(), Transient(), Transient()])

    async def call() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "done"

    async def sleep(delay: float) -> None:
        delays.append(delay)

    policy = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.03)
    result = await retrying(
        call, policy, errors=(Transient, Fatal), judge=_judge, exhausted=lambda e, n: GaveUp(n), sleep=sleep
    )
    assert result == "done" and len(delays) == 3
    assert all(0 <= d <= min(0.03, 0.01 * 2**n) for n, d in enumerate(delays))


async def test_retrying_stops_at_the_verdict_the_attempts_or_the_budget() -> None:
    calls = 0

    async def failing(exc: Exception) -> None:
        nonlocal calls
        calls += 1
        raise exc

    async def no_sleep(_: float) -> None:
        return None

    policy = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.001)
    kw = {
        "errors": (Transient, Fatal),
        "judge": _judge,
        "exhausted": lambda e, n: GaveUp(n),
        "sleep": no_sleep,
    }
    with pytest.raises(GaveUp) as info:
        await retrying(lambda: failing(Transient()), policy, **kw)  # type: ignore[arg-type]
    assert (info.value.attempts, calls) == (3, 3)  # no pause after the last attempt

    calls = 0
    with pytest.raises(GaveUp) as info:
        await retrying(lambda: failing(Fatal()), policy, **kw)  # type: ignore[arg-type]
    assert (info.value.attempts, calls) == (-1, 1)  # the backend's verdict: not retried

    calls = 0
    with pytest.raises(KeyError):  # not a backend failure at all: through at once
        await retrying(lambda: failing(KeyError("x")), policy, **kw)  # type: ignore[arg-type]
    assert calls == 1

    calls = 0
    slow = RetryPolicy(attempts=10, base_delay=1.0, max_delay=1.0, budget=0.5)
    with pytest.raises(GaveUp) as info:
        # A pause that would end beyond the budget is not taken (the delay floor makes it 1 s).
        await retrying(lambda: failing(Transient()), slow, **{**kw, "judge": lambda e, n: 1.0})  # type: ignore[arg-type]
    assert (info.value.attempts, calls) == (1, 1)


def test_a_retry_after_hint_raises_the_pause_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.5)
    assert 0.2 <= policy.delay(0, at_least=0.2) <= 0.5
    assert policy.delay(0, at_least=9.0) == 0.5


# --- shared clients -----------------------------------------------------------------------------


async def test_a_shared_client_is_made_once_and_closed_by_its_last_user() -> None:
    pool: SharedClients[object] = SharedClients()
    made: list[object] = []

    def make() -> object:
        made.append(object())
        return made[-1]

    first = pool.acquire("k", make)
    assert pool.acquire("k", make) is first and len(made) == 1
    assert pool.acquire("other", make) is not first
    assert pool.release("k", first) is False  # one user left
    assert pool.release("k", first) is True  # the last: the caller closes it
    assert pool.acquire("k", make) is not first  # a new one after that


async def test_clients_belong_to_their_event_loop() -> None:
    pool: SharedClients[object] = SharedClients()
    here = pool.acquire("k", object)

    def elsewhere() -> object:
        async def take() -> object:
            return pool.acquire("k", object)

        return asyncio.run(take())

    other = await asyncio.to_thread(elsewhere)
    assert other is not here
    loop = asyncio.get_running_loop()
    assert pool.release("k", here, loop=loop) is True


async def test_a_discarded_client_is_replaced_and_its_release_does_nothing() -> None:
    pool: SharedClients[object] = SharedClients(per_loop=False)
    broken = pool.acquire("k", object)
    pool.discard("k", broken)
    fresh = pool.acquire("k", object)
    assert fresh is not broken
    assert pool.release("k", broken) is False
    assert pool.release("k", fresh) is True
