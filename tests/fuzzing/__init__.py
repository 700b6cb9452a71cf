"""A mutation fuzzer for dcxsec's TLS: a relay on loopback between a real
client and a real server alters one record of a recorded conversation, one
byte or one field at a time, in either direction, and each dcxsec end is
judged: it must survive, close its connection within its deadline, and
never deliver altered plaintext.  See campaign.py for the verdicts and
``python -m fuzzing --help`` (from tests/) for a run of any length.
"""
from .campaign import FAILURES, Campaign, Config, Verdict, summary
from .records import Mutation

__all__ = ["Campaign", "Config", "FAILURES", "Mutation", "Verdict", "summary"]
