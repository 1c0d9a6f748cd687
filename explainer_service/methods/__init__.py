"""Explanation methods, one class each with an ``attribute(chip_a, chip_b, ...)`` entry point, and
the registry that builds any of them by name (``build``, ``list_methods``)."""

from .base import SaliencyMethod
from .corrrise import CorrRISE, CorrRISEConfig, ShardResult
from .perturbation import PerturbationMethod
from .registry import (
    METHOD_NAMES,
    MethodInfo,
    MethodParam,
    build,
    check_params,
    forward_passes,
    list_methods,
    method_info,
    parse_params,
)

__all__ = [
    "METHOD_NAMES",
    "MethodInfo",
    "MethodParam",
    "build",
    "check_params",
    "forward_passes",
    "list_methods",
    "method_info",
    "parse_params",
    "SaliencyMethod",
    "PerturbationMethod",
    "CorrRISE",
    "CorrRISEConfig",
    "ShardResult",
]
