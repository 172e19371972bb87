"""The ``stemstream`` command: ``main`` (the parser and the one error funnel), ``common`` (model flags
and loading, once), and one module per command group (``separate``, ``demo``, ``lab``, ``bench``)."""
from .main import main

__all__ = ["main"]
