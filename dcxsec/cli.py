"""The ``dcxsec`` command line: ``echo``, ``send`` and ``receive`` over TLS,
``cert`` manages the store, ``demo`` runs the main job."""
from __future__ import annotations

import argparse
import gc
import sys

from dcxsec import certcli, echo, receive, send


def _version() -> str:
    import dcxsec

    return f"dcxsec {dcxsec.__version__} on {dcxsec.backend()}"


def _without_numpy() -> None:
    """Keep pydicom from importing numpy in echo, send and receive, which
    decode no pixel data (``send --decompress`` does): pydicom imports numpy
    when it is installed, and that import (OpenBLAS starts a thread per core)
    was a third of the CPU a ``dcxsec send`` took to start.  pydicom works
    without numpy, as it is optional for it."""
    if "numpy" not in sys.modules:
        sys.modules["numpy"] = None  # type: ignore[assignment] - import raises ImportError


def _imported_quietly(command: str, decompress: bool) -> None:
    """For echo, send and receive, which run as processes of their own:
    import what they need with the cyclic collector paused, then freeze every
    object so far.  The collector would otherwise walk the modules' objects
    again and again as the imports make them (a fifth of a ``dcxsec send``'s
    start), and forked ``--workers`` share them untouched.  ``python -m
    dcxsec`` pauses the collector before importing anything."""
    if command not in ("echo", "send", "receive"):
        gc.enable()
        return
    gc.disable()
    try:
        if not decompress:
            _without_numpy()
        import pydicom  # noqa: F401
        import pynetdicom  # noqa: F401 - its SOP classes, presentation contexts and all
    finally:
        gc.freeze()
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dcxsec", description="Secure DICOM networking (DICOM TLS).")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True)
    echo.add_parser(commands)
    send.add_parser(commands)
    receive.add_parser(commands)
    certcli.add_parser(commands)
    demo = commands.add_parser("demo", help="a mutually authenticated TLS C-STORE on this machine")
    demo.add_argument("--count", type=int, default=20, help="objects to send (default 20)")
    demo.add_argument("--size", type=int, default=512 * 1024, help="bytes per object (default 512 KiB)")
    commands.add_parser("version", help="the dcxsec version and its TLS engine")
    args = parser.parse_args(argv)
    _imported_quietly(args.command, getattr(args, "decompress", False))
    if args.command == "cert":
        return certcli.run(args)
    if args.command in ("echo", "send", "receive"):
        return args.run(args)
    if args.command == "demo":
        from dcxsec.demo import run

        return run(args.count, args.size)
    print(_version())
    return 0


if __name__ == "__main__":
    sys.exit(main())
