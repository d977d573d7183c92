"""What the dashboard shows of payloads and results: secret-named keys masked, JSON pretty.

A key is "named like a secret" when its name, lower-cased with ``_`` and ``-`` removed,
contains one of the configured words treated the same way (``ui.secret_keys``): with the
default words, ``password``, ``db_password``, ``X-Auth-Token``, ``client_secret``, ``apiKey``
and ``Authorization`` are all masked. Masking is recursive (objects inside lists inside
objects) and replaces the whole value, whatever its type, with ``MASK``.

Editing a schedule shows its payload masked; ``unmask`` puts the stored values back where the
submitted payload still holds ``MASK`` under the same key, so saving the form does not
overwrite a secret with the mask.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

MASK: Final = "********"
MAX_SHOWN: Final = 65536  # characters of pretty JSON shown before it is cut


def _fold(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


class Masker:
    """Masks the values of secret-named keys in decoded JSON values."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words = tuple(w for w in (_fold(word) for word in words) if w)

    def secret(self, key: str) -> bool:
        """True when ``key`` is named like a secret."""
        folded = _fold(key)
        return any(word in folded for word in self.words)

    def mask(self, value: Any) -> Any:
        """A copy of ``value`` with every secret-named key's value replaced by ``MASK``."""
        if isinstance(value, dict):
            return {
                key: MASK if self.secret(str(key)) else self.mask(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.mask(item) for item in value]
        return value

    def unmask(self, submitted: Any, stored: Any) -> Any:
        """``submitted`` with each ``MASK`` under a secret-named key that ``stored`` also has
        (at the same place) replaced by the stored value."""
        if isinstance(submitted, dict) and isinstance(stored, dict):
            out = {}
            for key, item in submitted.items():
                if item == MASK and self.secret(str(key)) and key in stored:
                    out[key] = stored[key]
                else:
                    out[key] = self.unmask(item, stored.get(key))
            return out
        if isinstance(submitted, list) and isinstance(stored, list):
            return [
                self.unmask(item, stored[index] if index < len(stored) else None)
                for index, item in enumerate(submitted)
            ]
        return submitted

    def pretty(self, value: Any) -> str:
        """Masked ``value`` as indented JSON, cut after ``MAX_SHOWN`` characters."""
        text = json.dumps(self.mask(value), indent=2, ensure_ascii=False, sort_keys=False)
        if len(text) > MAX_SHOWN:
            return text[:MAX_SHOWN] + f"\n… ({len(text) - MAX_SHOWN} more characters not shown)"
        return text
