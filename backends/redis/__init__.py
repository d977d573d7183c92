"""The Redis backend: ``redis://``, ``rediss://`` and ``unix://`` URLs.

Every state change is one Lua script (``*.lua`` beside this file); the key scheme is described
in ``_keys.py``.
"""

from __future__ import annotations

from monoq.backends.redis._backend import RedisBackend

__all__ = ["RedisBackend"]
