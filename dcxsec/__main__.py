"""``python -m dcxsec``: the command line."""
import sys

from dcxsec.cli import main

sys.exit(main())
