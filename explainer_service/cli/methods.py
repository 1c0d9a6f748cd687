"""``facexplain methods``: the explanation methods with their parameters and cost per pair."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import positive_int


def register_methods(sub: Any) -> None:
    from ..settings import get_settings

    p = sub.add_parser("methods", help="list the explanation methods, their parameters and forward passes per pair")
    p.add_argument("--model", default=get_settings().default_model,
                   help="count forward passes on this model's chip (default: FACEXPLAIN_MODEL)")
    p.add_argument("--chip-size", type=positive_int, default=None, help="count them on this chip side instead")
    p.add_argument("--json", action="store_true", help="print the same as one JSON document")
    p.set_defaults(func=_cmd_methods)


def _format(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _cmd_methods(args: argparse.Namespace) -> int:
    from ..methods.registry import list_methods

    if args.chip_size is None:
        from ..models.registry import get_spec

        chip_size = get_spec(args.model).chip.size
        where = f"{args.model}'s {chip_size} px chip"
    else:
        chip_size = args.chip_size
        where = f"a {chip_size} px chip"
    infos = list_methods(chip_size)
    if args.json:
        print(json.dumps({"chip_size": chip_size, "methods": [m.to_dict() for m in infos]}, indent=2))
        return 0
    print(f"explanation methods (forward passes per pair on {where}, default parameters):")
    for m in infos:
        print(f"\n{m.name}  {m.title} ({m.reference})")
        print(f"  forward passes per pair: {m.forward_passes:,}   needs: {m.needs}"
              + (f"   --budget sets {m.budget_param}" if m.budget_param else ""))
        rows = [(f"{p.name}={_format(p.default)}", p.type, p.help) for p in m.params]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        for setting, kind, text in rows:
            print(f"  {setting:<{w0}}  {kind:<{w1}}  {text}")
    return 0
