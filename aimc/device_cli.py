"""Old name of the ``aimc device show CARD`` entry point; the code is in :mod:`aimc.card_commands` (``SHOW``)."""
from .card_commands import add_device_arguments as add_arguments
from .card_commands import run_device as run

__all__ = ["add_arguments", "run"]
