"""Old name of :mod:`aimc.card_commands` (``aimc devices``); kept so existing imports keep working."""
from .card_commands import *  # noqa: F401,F403
from .card_commands import _cards, add_arguments, add_device_arguments, inference_stats, plot_card, run, run_device  # noqa: F401
