"""The api role: a litestar app (``create_app``) served by an embedded uvicorn (``ApiRole``)."""

from monoq.api.app import create_app
from monoq.api.role import ApiRole

__all__ = ["ApiRole", "create_app"]
