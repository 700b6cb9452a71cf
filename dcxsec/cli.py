"""The ``dcxsec`` command line."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """``dcxsec demo`` runs the main job; ``dcxsec version`` names the engine."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv else "help"
    if command == "demo":
        from dcxsec.demo import main as demo

        return demo(argv)
    if command == "version":
        import dcxsec

        print(f"dcxsec {dcxsec.__version__} on {dcxsec.backend()}")
        return 0
    print("usage: dcxsec {demo,version} [options]", file=sys.stderr)
    return 0 if command in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    raise SystemExit(main())
