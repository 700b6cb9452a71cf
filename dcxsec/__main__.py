"""``python -m dcxsec``: the command line."""
import gc
import sys

gc.disable()  # until cli.main has imported what the command needs, then froze it

from dcxsec.cli import main  # noqa: E402

sys.exit(main())
