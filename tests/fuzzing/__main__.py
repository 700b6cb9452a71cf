"""A fuzzing run of any length, from tests/:

    python -m fuzzing --cases 40 --seed 1 --timeout 2 --report result.md

``--cases`` mutations per configuration (dcxsec as server, as client and
against itself, TLS 1.2 and 1.3, socket and pynetdicom).  Exits 1 when a
dcxsec end crashed, hung, closed late or accepted an altered record.
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import tempfile
import time
from pathlib import Path

import dcxsec

from . import FAILURES, Campaign, Config, Verdict, summary
from .peers import openssl_version

CONFIGS = [Config(role, version) for role in ("server", "client", "both") for version in ("1.2", "1.3")]
PYNETDICOM = [Config(role, version, "pynetdicom") for role in ("both", "server")
              for version in ("1.2", "1.3")]


def line(v: Verdict) -> str:
    what = v.mutation.describe() if v.mutation else "no alteration"
    elapsed = f"{v.elapsed:.2f} s" if v.elapsed is not None else "-"
    return f"{v.config} | {v.end} | {what} | {v.outcome} | {elapsed} | {v.error[:160]}"


def report(verdicts: list[Verdict], args, seconds: float, restarts: int) -> str:
    """The run's result as the Markdown section docs/fuzzing.md ends with."""
    s = summary(verdicts)
    worst: Verdict | None = s["worst"]
    rows = "\n".join(f"| {name} | {count} |" for name, count in sorted(s["outcomes"].items()))
    by_config = "\n".join(
        f"| {c} | {sum(1 for v in verdicts if v.config == c)} | "
        f"{max((v.elapsed for v in verdicts if v.config == c and v.elapsed is not None), default=0):.2f} s |"
        for c in dict.fromkeys(v.config for v in verdicts))
    failures = "\n".join(f"- {line(v)}" for v in s["failures"]) or "none"
    worst_text = (f"{worst.elapsed:.2f} s against {worst.limit:g} s ({worst.end} end, {worst.config}; "
                  f"{worst.mutation.describe() if worst.mutation else ''}; outcome {worst.outcome})"
                  if worst else "-")
    longest = max((v for v in verdicts if v.elapsed is not None), key=lambda v: v.elapsed, default=None)
    longest_text = (f"{longest.elapsed:.2f} s against {longest.limit:g} s ({longest.end} end, "
                    f"{longest.config})" if longest else "-")
    return f"""## Latest run

- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {seconds:.0f} s
- Versions: dcxsec {dcxsec.__version__} on {dcxsec.backend()}; {openssl_version()} (peers);
  Python {platform.python_version()}; {platform.system()} {platform.machine()}
- Command: `scripts/fuzz.sh --cases {args.cases} --seed {args.seed} --timeout {args.timeout:g}`
- Cases: {s['cases']} mutations, {s['ends']} dcxsec ends judged; worker restarts: {restarts}
- Deadlines: handshake_timeout and socket timeout {args.timeout:g} s, judged with {1.5:g} s of grace
- Time to close, from the connection's start (handshake unfinished) or from the later of
  the handshake's end and the last byte received; nearest its deadline: {worst_text};
  longest: {longest_text}

| outcome | dcxsec ends |
|---|---|
{rows}

| configuration | ends | longest time to close |
|---|---|---|
{by_config}

Failures ({', '.join(FAILURES)}): {failures}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzzing", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20, help="mutations per configuration")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=2.0,
                        help="handshake_timeout and socket timeout of the dcxsec ends (s)")
    parser.add_argument("--report", type=Path, help="write the result (Markdown) to this file")
    parser.add_argument("--budget", type=float, default=0, help="stop starting cases after this (s)")
    parser.add_argument("--verbose", action="store_true", help="a line per judged end")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dcxsec-fuzz-") as tmp:
        # The SCP's acse_timeout, lowered: cases whose handshake ends wait for it.
        campaign = Campaign(Path(tmp), timeout=args.timeout, acse_timeout=2 * args.timeout)
        try:
            for config in CONFIGS + PYNETDICOM:
                if args.budget and time.monotonic() - started > args.budget:
                    print(f"budget spent: {config} and later not run", file=sys.stderr)
                    break
                count = args.cases if config.mode == "socket" else max(1, args.cases // 2)
                campaign.fuzz(config, count, args.seed, only_handshake=config.mode == "pynetdicom",
                              progress=(lambda v: print(line(v), flush=True)) if args.verbose else None)
                print(f"{config}: done", file=sys.stderr, flush=True)
        finally:
            campaign.close()
            logs = {p.name: p.read_text(errors="replace") for p in Path(tmp).glob("worker-*.log")}
    text = report(campaign.verdicts, args, time.monotonic() - started, campaign.restarts)
    print(text)
    if args.report:
        args.report.write_text(text)
    failed = bool(summary(campaign.verdicts)["failures"])
    for name, content in logs.items():  # a sanitized engine writing to stderr
        if "ERROR: AddressSanitizer" in content or "runtime error:" in content:
            print(f"sanitizer report in {name}:\n{content[-4000:]}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
