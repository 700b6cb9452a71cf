"""The run's results and the table of ratios printed at its end.

Each scenario records one value per contender into a group.  Ratios are taken
within a group, so every ratio compares numbers measured in the same run.
The targets are those of the issue ("The targets"); they are checked for the
dcxsec row only.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

from contenders import DCXSEC, SSL, TCP, TCP_NODELAY, WITHOUT_PREFIX

# Groups of the main table come first; then the others, each under its title.
MAIN, ONE_PROCESS, ABLATION = "main", "one process", "ablation"
SECTION_TITLES = {
    ONE_PROCESS: "The same with the SCU and the SCP in one process (one GIL)",
    ABLATION: "What each mechanism pays (dcxsec with it, and without it: DCXSEC_WITHOUT in "
              "both processes)",
}


@dataclass(frozen=True)
class Target:
    """dcxsec's value must reach ``factor`` times the baseline's (or ``factor``
    itself); with ``at_most``, must not exceed it (memory)."""

    baseline: str | None  # a contender of the group, "ref", or None for an absolute value
    factor: float
    at_most: bool = False

    def describe(self, unit: str) -> str:
        sign = "<=" if self.at_most else ">="
        if self.baseline is None:
            return f"{sign}{self.factor:g} {unit}"
        return f"{sign}{self.factor:g}x {self.baseline}"

    def missed(self, ratio: float) -> bool:
        return ratio > self.factor if self.at_most else ratio < self.factor


@dataclass
class Group:
    """One line of comparison: a scenario measured for several contenders."""

    title: str
    unit: str
    ref: str | None = None  # the contender shown in the "x ref" column
    targets: tuple[Target, ...] = ()
    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    section: str = MAIN
    rounds: dict[str, list[float]] = field(default_factory=dict)  # each round's value, as run


ASSOC_TARGETS = (Target(SSL, 3.0), Target(TCP_NODELAY, 0.9))
STORE_TARGETS = (Target(SSL, 1.1), Target(TCP, 1.0))


class Report:
    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}

    def group(self, key: str, title: str, unit: str, ref: str | None = None,
              targets: tuple[Target, ...] = (), section: str = MAIN) -> Group:
        if key not in self.groups:
            self.groups[key] = Group(title, unit, ref, targets, section=section)
        return self.groups[key]

    def add(self, key: str, contender: str, value: float, note: str = "",
            rounds: list[float] | None = None) -> None:
        group = self.groups[key]
        group.values[contender] = value
        if note:
            group.notes[contender] = note
        if rounds:
            group.rounds[contender] = rounds

    # ---- rendering ----------------------------------------------------------

    @staticmethod
    def _ratio(group: Group, value: float, baseline: str | None) -> str:
        base = group.values.get(baseline) if baseline else None
        if base is None or base == 0:
            return ""
        return f"{value / base:.2f}"

    @staticmethod
    def _verdict(group: Group, contender: str, value: float) -> tuple[str, str]:
        """(the targets, "yes" or "NO" with each missed ratio or value to three
        places, so that a ratio shown rounded to 1.10 reads as the 1.096 it was)."""
        if contender != DCXSEC or not group.targets:
            return "", ""
        wanted, missed = [], []
        for target in group.targets:
            wanted.append(target.describe(group.unit))
            name = group.ref if target.baseline == "ref" else target.baseline
            if name is None:
                if target.missed(value):
                    missed.append(f"{value:.3f} {group.unit}")
            elif name in group.values and group.values[name] > 0:
                ratio = value / group.values[name]
                if target.missed(ratio):
                    missed.append(f"{ratio:.3f}x {target.baseline}")
            else:
                missed.append(f"no {target.baseline} value")
        return ", ".join(wanted), f"NO: {', '.join(missed)}" if missed else "yes"

    def rows(self, section: str = MAIN) -> list[list[str]]:
        rows = []
        for group in self.groups.values():
            if group.section != section:
                continue
            for contender, value in group.values.items():
                target, met = self._verdict(group, contender, value)
                ref = self._ratio(group, value, group.ref) if group.ref else ""
                if ref and group.ref:
                    ref = f"{ref} ({group.ref})"
                rows.append([group.title, contender, _number(value), group.unit,
                             self._ratio(group, value, SSL), self._ratio(group, value, TCP),
                             self._ratio(group, value, TCP_NODELAY), ref, target, met,
                             group.notes.get(contender, "")])
        return rows

    def json(self) -> list[dict]:
        """Every group with each round's value, for a later look at the spread."""
        return [dict(asdict(group), key=key) for key, group in self.groups.items()]

    def ablation_rows(self) -> list[list[str]]:
        """Per mechanism: dcxsec's best round with it and without it, the gain,
        the gains of the rounds paired as they ran (round i of each), and how
        far dcxsec's own rounds spread."""
        rows = []
        for group in self.groups.values():
            if group.section != ABLATION or DCXSEC not in group.values:
                continue
            with_value, with_rounds = group.values[DCXSEC], group.rounds.get(DCXSEC, [])
            spread = (f"{100 * (1 - min(with_rounds) / max(with_rounds)):.0f} %"
                      if with_rounds else "")
            for name, value in group.values.items():
                if not name.startswith(WITHOUT_PREFIX):
                    continue
                paired = [100 * (w / wo - 1) for w, wo in zip(with_rounds, group.rounds.get(name, []))]
                per_round = (f"{statistics.median(paired):+.1f} % ({min(paired):+.0f} .. "
                             f"{max(paired):+.0f})" if paired else "")
                rows.append([group.title, name[len(WITHOUT_PREFIX):], _number(with_value),
                             _number(value), group.unit, f"{100 * (with_value / value - 1):+.1f} %",
                             per_round, spread])
        return rows

    def markdown(self) -> str:
        header = ["scenario", "contender", "value", "unit", "x ssl", "x tcp", "x tcp+nodelay",
                  "x ref", "target (dcxsec)", "met?", "note"]
        main = self.rows()
        lines = _table(header, main) if main else []
        sections = dict.fromkeys(g.section for g in self.groups.values() if g.section != MAIN)
        for section in sections:
            lines += ["", f"**{SECTION_TITLES.get(section, section)}**", ""]
            if section == ABLATION:
                lines += _table(["scenario", "mechanism", "with", "without", "unit",
                                 "gain (best rounds)", "gain per round: median (range)",
                                 "spread of dcxsec's rounds"], self.ablation_rows())
            else:
                lines += _table(header, self.rows(section))
        return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
