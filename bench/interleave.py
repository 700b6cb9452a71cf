"""Contenders measured in turn, one round each, until every one has had its rounds.

On a shared machine whole phases run 20-30 % slower than others.  Measured
one after another, the contender that happens to meet a slow phase loses
its ratio to it; taken in turn, round by round, they all meet the same
phases, and the best round of each is comparable.

Every contender's round is timed here with the same clock, and the order
turns every round, so no contender always goes first or last.
pytest-benchmark also times the lead contender's rounds, for its own table.  Each
contender's ``prepare`` (resetting an SCP, making a fresh pair) runs untimed
before its own round.
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


def best_rounds(benchmark, contestants: list[Contestant], lead: str, rounds: int,
                every: dict[str, list[float]] | None = None) -> dict[str, float]:
    """The best (shortest) round of each contestant, in seconds, rounds taken in turn.
    ``every``, if given, gets each contestant's rounds in the order they ran.

    Every contestant, the lead included, is timed here by the same clock,
    after its untimed ``prepare``, in an order that turns by one every round.
    pytest-benchmark times the lead's rounds as well, for its own table: the
    contestants before the lead run in its untimed setup, those after it in
    its untimed teardown.
    """
    by_name = {c.name: c for c in contestants}
    order = [lead] + [c.name for c in contestants if c.name != lead]
    best = {c.name: float("inf") for c in contestants}
    after_lead: list[Contestant] = []
    turn = 0

    def timed(contestant: Contestant) -> None:
        start = time.perf_counter()
        contestant.run()
        elapsed = time.perf_counter() - start
        best[contestant.name] = min(best[contestant.name], elapsed)
        if every is not None:
            every.setdefault(contestant.name, []).append(elapsed)

    def before_lead() -> None:
        nonlocal turn, after_lead
        shift = turn % len(order)
        turn += 1
        rotated = order[shift:] + order[:shift]
        at = rotated.index(lead)
        for name in rotated[:at]:
            by_name[name].prepare()
            timed(by_name[name])
        after_lead = [by_name[name] for name in rotated[at + 1:]]
        by_name[lead].prepare()

    def rest_of_round() -> None:
        for contestant in after_lead:
            contestant.prepare()
            timed(contestant)

    def lead_round() -> None:
        timed(by_name[lead])

    if benchmark.disabled:  # --benchmark-disable: one round, not timed by pytest-benchmark
        before_lead()
        lead_round()
        rest_of_round()
    else:
        benchmark.pedantic(lead_round, setup=before_lead, teardown=rest_of_round, rounds=rounds,
                           iterations=1)
    return best
