"""The run's results and the table of ratios printed at its end.

Each scenario records one value per contender into a group.  Ratios are taken
within a group, so every ratio compares numbers measured in the same run.
The targets are those of the issue ("The targets"); they are checked for the
dcxsec row only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from contenders import DCXSEC, SSL, TCP, TCP_NODELAY


@dataclass(frozen=True)
class Target:
    """dcxsec's value must reach ``factor`` times the baseline's (or ``factor`` itself)."""

    baseline: str | None  # a contender of the group, "ref", or None for an absolute value
    factor: float

    def describe(self, unit: str) -> str:
        if self.baseline is None:
            return f">={self.factor:g} {unit}"
        return f">={self.factor:g}x {self.baseline}"


@dataclass
class Group:
    """One line of comparison: a scenario measured for several contenders."""

    title: str
    unit: str
    ref: str | None = None  # the contender shown in the "x ref" column
    targets: tuple[Target, ...] = ()
    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


ASSOC_TARGETS = (Target(SSL, 3.0), Target(TCP_NODELAY, 0.9))
STORE_TARGETS = (Target(SSL, 1.1), Target(TCP, 1.0))


class Report:
    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}

    def group(self, key: str, title: str, unit: str, ref: str | None = None,
              targets: tuple[Target, ...] = ()) -> Group:
        if key not in self.groups:
            self.groups[key] = Group(title, unit, ref, targets)
        return self.groups[key]

    def add(self, key: str, contender: str, value: float, note: str = "") -> None:
        group = self.groups[key]
        group.values[contender] = value
        if note:
            group.notes[contender] = note

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
                if value < target.factor:
                    missed.append(f"{value:.3f} {group.unit}")
            elif name in group.values and group.values[name] > 0:
                ratio = value / group.values[name]
                if ratio < target.factor:
                    missed.append(f"{ratio:.3f}x {target.baseline}")
            else:
                missed.append(f"no {target.baseline} value")
        return ", ".join(wanted), f"NO: {', '.join(missed)}" if missed else "yes"

    def rows(self) -> list[list[str]]:
        rows = []
        for group in self.groups.values():
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

    def markdown(self) -> str:
        header = ["scenario", "contender", "value", "unit", "x ssl", "x tcp", "x tcp+nodelay",
                  "x ref", "target (dcxsec)", "met?", "note"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows()]
        return "\n".join(lines)


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
