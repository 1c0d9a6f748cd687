"""Explanation methods, one class each with an ``attribute(chip_a, chip_b, ...)`` entry point."""

from .corrrise import CorrRISE, CorrRISEConfig

__all__ = ["CorrRISE", "CorrRISEConfig"]
