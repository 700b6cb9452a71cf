"""A server's supported presentation contexts, copied per association cheaply.

pynetdicom gives every association its own ``deepcopy`` of the server's
contexts.  A storage SCP that takes every storage SOP class in every
transfer syntax holds 171 contexts and 7,654 UIDs, and ``deepcopy`` rebuilds
each UID through pydicom's validation: 70 ms of CPU per association, with
the GIL held, before the association says a word.  UIDs are immutable
strings, so a copy that shares them and copies only each context's own
lists is just as independent.
"""
from __future__ import annotations

import copy
from typing import Any

_SHARED = (str, int, float, bool, bytes, type(None))  # immutable: the copy may share them


def copy_context(cx: Any) -> Any:
    """A presentation context its association may change without touching ``cx``."""
    clone = copy.copy(cx)
    for name, value in vars(cx).items():
        if isinstance(value, list) and all(isinstance(item, _SHARED) for item in value):
            setattr(clone, name, list(value))
        elif not isinstance(value, _SHARED):
            setattr(clone, name, copy.deepcopy(value))
    return clone


class SupportedContexts(list):
    """The server's contexts; ``deepcopy`` of it is ``copy_context`` of each."""

    def __deepcopy__(self, memo: dict) -> list:
        return [copy_context(cx) for cx in self]
