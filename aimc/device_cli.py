"""``aimc device show CARD [--plot FILE]``: the command entry point (the code is in ``aimc.devices_cli``)."""
from .devices_cli import add_device_arguments as add_arguments
from .devices_cli import run_device as run

__all__ = ["add_arguments", "run"]
