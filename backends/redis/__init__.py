"""The Redis backend: ``redis://``, ``rediss://`` and ``unix://`` URLs, Sentinel
(``redis+sentinel://``) and Cluster (``redis+cluster://``).

Every state change is Lua scripts (``*.lua`` beside this file), each over the keys of one hash
slot; the key scheme, and which operations are several steps, is described in ``_keys.py``.
"""

from __future__ import annotations

from monoq.backends.redis._backend import RedisBackend

__all__ = ["RedisBackend"]
