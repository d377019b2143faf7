"""What the chip costs: energy, latency and area of every inference, from the simulated physics (issue 10).

Torch-free. ``Counts`` (what each tile did, always counted), technology cards (``load_card``: cited TOML
files in ``aimc/cost/cards``) and the report (``report``/``measure``: counts x card -> pJ, ns, mm^2).
"""
from .cards import CardError, TechCard, available, load_card
from .counters import Counts
from .report import (ASSUMPTIONS, CostReport, LayerCost, columns_per_adc, core_area, core_static_power, count_digital,
                     fit_config, measure, prepare, report, reset)

__all__ = ["ASSUMPTIONS", "CardError", "CostReport", "Counts", "LayerCost", "TechCard", "available", "columns_per_adc",
           "core_area", "core_static_power", "count_digital", "fit_config", "load_card", "measure", "prepare", "report",
           "reset"]
