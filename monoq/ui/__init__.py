"""The web dashboard: server-rendered pages under /ui of the api role (see ``create_ui``)."""

from monoq.ui.app import create_ui

__all__ = ["create_ui"]
