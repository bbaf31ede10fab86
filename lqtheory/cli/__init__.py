"""The cli room: the ``lqtheory`` command. It sits on top of every other room; nothing imports it."""

from lqtheory.cli.main import main

__all__ = ["main"]
