"""Certificate stores: which one the local AE uses (IDCXSEC CertStore)."""
from __future__ import annotations

import enum
import os
import sys


class CertStore(enum.IntEnum):
    """The certificate store scope, named as in the IDCXSEC interface."""

    CURRENT_USER = 0
    LOCAL_COMPUTER = 1

    @classmethod
    def default(cls) -> "CertStore":
        """The store an account uses when none is chosen.

        A service account (root; LocalSystem on Windows) uses LOCAL_COMPUTER,
        anyone else CURRENT_USER.
        """
        if sys.platform == "win32":
            import getpass

            return cls.LOCAL_COMPUTER if getpass.getuser().upper() == "SYSTEM" else cls.CURRENT_USER
        return cls.LOCAL_COMPUTER if os.geteuid() == 0 else cls.CURRENT_USER
