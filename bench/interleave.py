"""Contenders measured in turn, one round each, until every one has had its rounds.

On a shared machine whole phases run 20-30 % slower than others.  Measured
one after another, the contender that happens to meet a slow phase loses
its ratio to it; taken in turn, round by round, they all meet the same
phases, and the best round of each is comparable.

pytest-benchmark times dcxsec's rounds; the other contenders' rounds run in
its untimed ``setup``, just before each of them, and are timed here with the
same clock.  Each contender's ``prepare`` (resetting an SCP, making a fresh
pair) runs untimed before its own round.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable


def _nothing() -> None:
    return None


@dataclass
class Contestant:
    """One contender's round of a scenario."""

    name: str
    run: Callable[[], Any]  # the timed work of one round
    prepare: Callable[[], Any] = _nothing  # untimed, before each round


def best_rounds(benchmark, contestants: list[Contestant], lead: str, rounds: int
                ) -> dict[str, float]:
    """The best (shortest) round of each contestant, in seconds, rounds taken in turn.

    ``lead`` is the contestant pytest-benchmark times; the others go before
    each of its rounds, in an order that turns by one every round.
    """
    by_name = {c.name: c for c in contestants}
    others = [c for c in contestants if c.name != lead]
    best = {c.name: float("inf") for c in others}
    turn = 0

    def others_then_prepare_lead() -> tuple[tuple, dict]:
        nonlocal turn
        shift = turn % len(others) if others else 0
        turn += 1
        for contestant in others[shift:] + others[:shift]:
            contestant.prepare()
            start = time.perf_counter()
            contestant.run()
            best[contestant.name] = min(best[contestant.name], time.perf_counter() - start)
        by_name[lead].prepare()
        return (), {}

    benchmark.pedantic(by_name[lead].run, setup=others_then_prepare_lead, rounds=rounds,
                       iterations=1)
    best[lead] = benchmark.stats.stats.min
    return best
