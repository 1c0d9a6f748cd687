"""The explanation methods by name: class, config, parameters, needs and cost, written once.

Every caller that picks a method by name (the CLI, ``evaluation``, ``sanity``, the benchmarks, and
later the API's ListMethods and the dashboard) goes through this table:

- :data:`METHOD_NAMES`: the names in the paper's order (Table 1), CorrRISE+ (issue 11) after
  the perturbation baselines;
- :func:`build`: ``build(name, model, **params)`` makes any method over a FaceModel;
- :func:`list_methods`: one :class:`MethodInfo` per method with its parameters (name, type,
  default, help), what it needs and its forward-pass budget per pair on a chip;
- :func:`forward_passes`: the budget of one configuration;
- :func:`check_params`: a request checked before any work: parameters, their ranges on the chip
  and ``Settings.limits`` (what :func:`build` checks too);
- :func:`parse_params`: parameters given as text (``--param k=v``, a request's strings).

Three parameters are accepted by every method and applied where they mean something, so that a
caller can treat the methods alike: ``seed`` (ignored by the deterministic methods),
``perturbations_per_eval`` (perturbed images per model call; ignored by the gradient methods) and
``budget`` (the number of perturbations per face of the sampling methods: CorrRISE's and RISE's
``n_masks``, LIME's ``n_samples``; ignored by the others). Any other unknown parameter is an
InputError naming the method's parameters.

Limits: before a method is built (and in :func:`check_params`, which callers run before they open
a model or start a server) every parameter is checked twice, the same way for the CLI and the API:

- its range on the chip, by the method's config (``check_for_chip``: a RISE grid, an xFace patch
  or stride, a MinPlus stride or sigma larger than the chip, more MinPlus steps than candidate
  regions, more LIME superpixels than pixels): an InputError naming the parameter;
- its size against ``Settings.limits`` (:data:`PARAM_LIMITS`): perturbations per face
  (``n_masks``, ``n_samples``, ``budget``) against ``max_masks``, CorrRISE's ``patches`` and
  LIME's ``n_segments`` against ``max_patches``, patch sides against ``max_patch_size``,
  ``perturbations_per_eval`` against ``max_batch``; and the whole cost, the forward passes of one
  pair, against ``2 * max_masks + 2`` (``max_masks`` perturbations per face, whatever makes them:
  xFace's stride, MinPlus's steps...). A LimitExceededError names the parameter, the limit and
  its ``FACEXPLAIN_*`` variable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FacexplainError, InputError, LimitExceededError
from ..masks import MaskConfig
from ..models.base import FaceModel
from .base import SaliencyMethod
from .corrrise import CorrRISE, CorrRISEConfig
from .corrrise_plus import CorrRISEPlus, CorrRISEPlusConfig
from .gradcam import GradCAM, GradCAMConfig, GradCAMPlusPlus, GradTarget
from .lime import LIME, LIMEConfig
from .minplus import MinPlus, MinPlusConfig
from .rise import RISE, RISEConfig
from .xface import XFace, XFaceConfig

__all__ = [
    "METHOD_NAMES",
    "GENERIC_PARAMS",
    "MethodParam",
    "MethodInfo",
    "build",
    "list_methods",
    "method_info",
    "forward_passes",
    "check_params",
    "parse_params",
    "PARAM_LIMITS",
    "MAX_SEED",
]

#: The largest seed: seeds travel as signed 64-bit integers (the API's ParamValue, job records).
MAX_SEED = 2**63 - 1

#: Parameters every method accepts (applied where they mean something; see the module docstring).
GENERIC_PARAMS = ("seed", "budget", "perturbations_per_eval")

#: What a method needs: any FaceModel, or a PyTorch twin of it (models.twins).
NEEDS_MODEL = "face model"
NEEDS_TWIN = "pytorch twin"


@dataclass(frozen=True)
class MethodParam:
    """One parameter of a method: its name, type (as written in the config), default and help."""

    name: str
    type: str
    default: Any
    help: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (tuples become lists)."""
        default = list(self.default) if isinstance(self.default, tuple) else self.default
        return {"name": self.name, "type": self.type, "default": default, "help": self.help}


@dataclass(frozen=True)
class MethodInfo:
    """What ListMethods and the dashboard show about a method.

    ``forward_passes``: model evaluations of one pair (both faces, the clean pair included) at the
    default parameters on a ``chip_size`` chip. ``budget_param``: the parameter ``budget`` sets
    (None: the method has no sampling budget). ``seeded``: whether ``seed`` changes its maps.
    """

    name: str
    title: str
    reference: str
    needs: str
    params: tuple[MethodParam, ...]
    budget_param: str | None
    seeded: bool
    chip_size: int
    forward_passes: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return {
            "name": self.name,
            "title": self.title,
            "reference": self.reference,
            "needs": self.needs,
            "budget_param": self.budget_param,
            "seeded": self.seeded,
            "chip_size": self.chip_size,
            "forward_passes": self.forward_passes,
            "params": [p.to_dict() for p in self.params],
        }


#: Configs whose ``masks`` (a MaskConfig) are listed and set as flat parameters.
_MASKED_CONFIGS = (CorrRISEConfig, CorrRISEPlusConfig)


@dataclass(frozen=True)
class _Entry:
    name: str
    title: str
    reference: str
    method_class: Any
    config_class: Any
    helps: dict[str, str]
    budget_param: str | None = None
    needs: str = NEEDS_MODEL
    limits: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def params(self) -> tuple[MethodParam, ...]:
        if self.config_class in _MASKED_CONFIGS:
            own = [f for f in dataclasses.fields(MaskConfig)] + [
                f for f in dataclasses.fields(self.config_class) if f.name != "masks"
            ]
        else:
            own = list(dataclasses.fields(self.config_class))
        out = []
        for f in own:
            factory: Any = f.default_factory
            default = f.default if f.default is not dataclasses.MISSING else factory()
            out.append(MethodParam(f.name, str(f.type), default, self.helps.get(f.name, "")))
        return tuple(out)

    def config(self, values: Mapping[str, Any]) -> Any:
        """The method's config from its own (flat) parameters; the config validates them."""
        if self.config_class in _MASKED_CONFIGS:
            mask_names = {f.name for f in dataclasses.fields(MaskConfig)}
            masks = MaskConfig(**{k: v for k, v in values.items() if k in mask_names})
            rest = {k: v for k, v in values.items() if k not in mask_names}
            return self.config_class(masks=masks, **rest)
        return self.config_class(**values)


#: Parameters bounded by ``Settings.limits``, whatever the method: parameter -> ``Limits`` field.
GENERIC_LIMITS: Mapping[str, str] = {"budget": "max_masks", "perturbations_per_eval": "max_batch"}

_PPE = "perturbed images per model call (speed and memory only, never the maps)"
_SEED = "seed of the random perturbations"

_ENTRIES: tuple[_Entry, ...] = (
    _Entry(
        "corrrise", "CorrRISE",
        "Lu, Xu, Ebrahimi, WACV 2024 workshops (Algorithm 1)",
        CorrRISE, CorrRISEConfig,
        {
            "n_masks": "number of masks N per face",
            "patches": "square patches per mask",
            "patch_size": "patch side in chip pixels (None: 30 px on 112 px, scaled to the chip)",
            "values": "patch values: uniform in [0, 1) or binary (0)",
            "per_pixel": "one random value per pixel of a patch instead of one per patch",
            "clip_at_border": "patches may overlap the chip's border (every pixel equally covered)",
            "seed": _SEED,
            "correlation": "per-pixel correlation of mask values and scores: pearson or spearman",
            "perturbations_per_eval": _PPE + " (None: the model's hint)",
        },
        budget_param="n_masks",
        limits={"n_masks": "max_masks", "patches": "max_patches", "patch_size": "max_patch_size"},
    ),
    _Entry(
        "rise", "RISE",
        "Petsiuk, Das, Saenko, BMVC 2018",
        RISE, RISEConfig,
        {
            "n_masks": "number of masks N per face",
            "grid": "side s of the random binary grid",
            "p": "probability that a grid cell is kept",
            "seed": _SEED,
            "perturbations_per_eval": _PPE,
        },
        budget_param="n_masks",
        limits={"n_masks": "max_masks"},
    ),
    _Entry(
        "lime", "LIME",
        "Ribeiro, Singh, Guestrin, KDD 2016",
        LIME, LIMEConfig,
        {
            "n_samples": "samples N per face (the first is the clean image)",
            "segmentation": "superpixels: slic or quickshift",
            "n_segments": "SLIC's target number of superpixels",
            "compactness": "SLIC's compactness",
            "kernel_size": "quickshift's kernel size",
            "max_dist": "quickshift's maximum distance",
            "ratio": "quickshift's colour/space ratio",
            "substrate": "an 'off' superpixel becomes zero (black) or its mean colour",
            "kernel_width": "width of the sample-weight kernel on the cosine distance",
            "alpha": "ridge penalty",
            "seed": _SEED,
            "perturbations_per_eval": _PPE,
        },
        budget_param="n_samples",
        limits={"n_samples": "max_masks", "n_segments": "max_patches"},
    ),
    _Entry(
        "xface", "xFace",
        "Knoche, Teepe, Hormann, Rigoll, WACV 2023 workshops",
        XFace, XFaceConfig,
        {
            "patch_sizes": "occluding patch sides in chip pixels (None: 7, 14, 28 on 112 px, scaled)",
            "stride": "step between patch positions (None: 5 px on 112 px, scaled)",
            "fill_value": "value of occluded pixels, 0..255",
            "smooth": "Gaussian smoothing of each per-size map",
            "perturbations_per_eval": _PPE,
        },
        limits={"patch_sizes": "max_patch_size"},
    ),
    _Entry(
        "minplus", "MinPlus",
        "Mery and Morris, WACV 2022",
        MinPlus, MinPlusConfig,
        {
            "steps": "greedy steps T per search",
            "sigma": "Gaussian region sigma in chip pixels (None: 7 px on 112 px, scaled)",
            "stride": "spacing of candidate centres (None: 14 px on 112 px, scaled)",
            "substrate": "a removed pixel becomes zero (black) or a blur of the face",
            "blur_sigma": "blur of the 'blur' substrate (None: the region's sigma)",
            "mode": "minplus (removal + insertion), minus or plus",
            "perturbations_per_eval": _PPE,
        },
    ),
    _Entry(
        "corrrise-plus", "CorrRISE+",
        "issue 11: CorrRISE's masks, regression (control-variate) estimator; docs/benchmarks.md",
        CorrRISEPlus, CorrRISEPlusConfig,
        {
            "n_masks": "number of masks N per face",
            "patches": "square patches per mask",
            "patch_size": "patch side in chip pixels (None: 30 px on 112 px, scaled to the chip)",
            "values": "patch values: uniform in [0, 1) or binary (0)",
            "per_pixel": "one random value per pixel of a patch instead of one per patch",
            "clip_at_border": "must stay true (the exact mask covariance assumes it)",
            "seed": _SEED,
            "grids": "cells per side of each grid of the regression basis",
            "superpixels": "SLIC superpixel counts of each face added to the basis (empty: none)",
            "ridge": "ridge penalty relative to the mean feature variance (None: chosen per face by GCV)",
            "output": "correlation (the fitted correlation, smooth) or effect (the fitted per-pixel effect)",
            "pool": "SLIC superpixel counts the map is averaged over at the end (empty: none)",
            "residual": "add the per-pixel sample correction (converges to CorrRISE's map)",
            "perturbations_per_eval": _PPE + " (None: the model's hint)",
        },
        budget_param="n_masks",
        limits={"n_masks": "max_masks", "patches": "max_patches", "patch_size": "max_patch_size"},
    ),
    _Entry(
        "gradcam", "Grad-CAM",
        "Selvaraju et al., ICCV 2017",
        GradCAM, GradCAMConfig,
        {
            "relu": "keep only positive evidence",
            "normalize": "divide each map by its largest absolute value",
            "layer": "submodule of the twin whose activations are explained (None: the network's default)",
        },
        needs=NEEDS_TWIN,
    ),
    _Entry(
        "gradcampp", "Grad-CAM++",
        "Chattopadhay et al., WACV 2018",
        GradCAMPlusPlus, GradCAMConfig,
        {
            "relu": "keep only positive evidence",
            "normalize": "divide each map by its largest absolute value",
            "layer": "submodule of the twin whose activations are explained (None: the network's default)",
        },
        needs=NEEDS_TWIN,
    ),
)

_BY_NAME = {e.name: e for e in _ENTRIES}

#: Each method's parameters bounded by ``Settings.limits`` (parameter -> ``Limits`` field), the
#: generic ones included; the forward passes of a pair are bounded by ``2 * max_masks + 2``.
PARAM_LIMITS: Mapping[str, Mapping[str, str]] = {
    e.name: {**GENERIC_LIMITS, **e.limits} for e in _ENTRIES
}

#: The methods, in the paper's order (Table 1).
METHOD_NAMES: tuple[str, ...] = tuple(e.name for e in _ENTRIES)


def _entry(name: str) -> _Entry:
    entry = _BY_NAME.get(name) if isinstance(name, str) else None
    if entry is None:
        raise InputError(f"unknown method {name!r} (known: {', '.join(METHOD_NAMES)})")
    return entry


def _own_params(entry: _Entry, params: Mapping[str, Any]) -> dict[str, Any]:
    """The method's own parameters from ``params`` after resolving the generic ones."""
    names = {p.name for p in entry.params()}
    unknown = sorted(k for k in params if k not in names and k not in GENERIC_PARAMS)
    if unknown:
        raise InputError(
            f"method {entry.name} has no parameter {', '.join(unknown)} "
            f"(its parameters: {', '.join(sorted(names | set(GENERIC_PARAMS)))})"
        )
    own = {k: v for k, v in params.items() if k in names}
    budget = params.get("budget")
    if budget is not None and entry.budget_param is not None:
        if entry.budget_param in own and own[entry.budget_param] != budget:
            raise InputError(
                f"method {entry.name}: budget={budget!r} contradicts {entry.budget_param}={own[entry.budget_param]!r}"
            )
        own[entry.budget_param] = budget
    # a generic parameter the method lacks is ignored (above); a None one keeps the default
    return {k: v for k, v in own.items() if not (k in GENERIC_PARAMS and v is None)}


def _over_limit(method: str, param: str, value: Any, field: str, limit: int) -> LimitExceededError:
    var = "FACEXPLAIN_" + field.upper()
    return LimitExceededError(
        f"method {method}: {param} {value} is over the limit {limit} of {field} (set {var} to change it)"
    )


def _check_limits(entry: _Entry, params: Mapping[str, Any], own: Mapping[str, Any], passes: int) -> None:
    """LimitExceededError naming the first parameter over its ``Settings.limits`` bound, or the
    forward passes of one pair over ``2 * max_masks + 2``; InputError for a generic parameter
    that is not an integer >= 1."""
    from ..settings import get_settings

    limits = get_settings().limits
    for param, field in GENERIC_LIMITS.items():
        value = params.get(param)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"method {entry.name}: {param} must be an integer >= 1, got {value!r}")
        if value > getattr(limits, field):
            raise _over_limit(entry.name, param, value, field, getattr(limits, field))
    for param, field in entry.limits.items():
        value = own.get(param)
        limit = getattr(limits, field)
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if v is not None and v > limit:
                raise _over_limit(entry.name, param, v, field, limit)
    seed = params.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or not 0 <= seed <= MAX_SEED):
        # a seed is kept and sent back as a 64-bit integer (job records, the API's ParamValue)
        raise InputError(f"method {entry.name}: seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    per_face = max(0, (passes - 2) // 2)
    if per_face > limits.max_masks:
        cost = ", ".join(f"{k}={v}" for k, v in own.items() if k not in ("seed", "perturbations_per_eval"))
        raise LimitExceededError(
            f"method {entry.name}{' with ' + cost if cost else ''}: {passes} forward passes per pair "
            f"({per_face} perturbations per face) is over the limit max_masks={limits.max_masks} "
            "perturbations per face (set FACEXPLAIN_MAX_MASKS to change it)"
        )


def check_params(name: str, chip_size: int, **params: Any) -> int:
    """Check a request for method ``name`` on a ``chip_size`` chip before any work; return the
    forward passes one pair will take.

    The parameters are checked as :func:`build` takes them: known names and types, ranges on the
    chip (the config's ``check_for_chip``) and ``Settings.limits`` (see the module docstring).

    Raises:
        InputError: an unknown method or parameter, or a value out of its range (the message
            names the parameter).
        LimitExceededError: a parameter, or the forward passes of one pair, over a limit (the
            message names the parameter, the limit and its ``FACEXPLAIN_*`` variable).
    """
    entry = _entry(name)
    own = _own_params(entry, params)
    config = entry.config(own)
    passes = int(entry.method_class.forward_passes_for(config, int(chip_size)))
    _check_limits(entry, params, own, passes)
    return passes


def build(name: str, model: FaceModel, **params: Any) -> SaliencyMethod:
    """The method ``name`` over ``model`` with ``params`` (the rest at their defaults).

    ``params`` are the method's own (:func:`list_methods` lists them) and the generic ``seed``,
    ``budget`` and ``perturbations_per_eval``. The gradient methods (Grad-CAM, Grad-CAM++) run on
    the model's PyTorch twin: the module of a ``TorchFaceModel``, else the twin of the model's name
    (``models.twins``; ModelNotReadyError when it has none). InputError for an unknown method or
    parameter, or a bad value; LimitExceededError for a request over ``Settings.limits`` (both
    checked by :func:`check_params` on the model's chip before anything is built).
    """
    entry = _entry(name)
    check_params(name, model.spec.chip.size, **params)
    config = entry.config(_own_params(entry, params))
    if entry.needs == NEEDS_TWIN:
        target = GradTarget.for_face_model(model, config.layer)
        method: SaliencyMethod = entry.method_class(target, config)
    else:
        method = entry.method_class(model, config)
    return method


def forward_passes(name: str, chip_size: int, **params: Any) -> int:
    """Model evaluations of one pair by method ``name`` with ``params`` on a ``chip_size`` chip
    (both faces, the clean pair included). InputError for a bad parameter or one that does not fit
    the chip; ``Settings.limits`` are not applied (:func:`check_params` applies them)."""
    entry = _entry(name)
    config = entry.config(_own_params(entry, params))
    return int(entry.method_class.forward_passes_for(config, int(chip_size)))


def _default_chip_size() -> int:
    from ..settings import get_settings
    from ..spec import DLIB_CHIP

    try:
        from ..models.registry import get_spec

        return get_spec(get_settings().default_model).chip.size
    except FacexplainError:
        return DLIB_CHIP.size


def method_info(name: str, chip_size: int | None = None) -> MethodInfo:
    """What :func:`list_methods` says about one method."""
    entry = _entry(name)
    size = _default_chip_size() if chip_size is None else int(chip_size)
    params = entry.params()
    return MethodInfo(
        name=entry.name,
        title=entry.title,
        reference=entry.reference,
        needs=entry.needs,
        params=params,
        budget_param=entry.budget_param,
        seeded=any(p.name == "seed" for p in params),
        chip_size=size,
        forward_passes=forward_passes(entry.name, size),
    )


def list_methods(chip_size: int | None = None) -> list[MethodInfo]:
    """Every method, in the paper's order, with its parameters, defaults and forward-pass budget
    per pair on a ``chip_size`` chip (None: the default model's chip)."""
    size = _default_chip_size() if chip_size is None else int(chip_size)
    return [method_info(name, size) for name in METHOD_NAMES]


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse_value(method: str, param: MethodParam, text: str) -> Any:
    kinds = [k.strip() for k in param.type.split("|")]
    t = text.strip()
    if "None" in kinds and t.lower() in ("none", ""):
        return None
    kind = next(k for k in kinds if k != "None")
    try:
        if kind == "bool":
            if t.lower() in _TRUE:
                return True
            if t.lower() in _FALSE:
                return False
            raise ValueError
        if kind == "int":
            return int(t)
        if kind == "float":
            return float(t)
        if kind.startswith("tuple[int"):
            return tuple(int(v) for v in t.split(",") if v.strip())
        return t
    except ValueError:
        raise InputError(f"method {method}: {param.name} must be {param.type}, got {text!r}") from None


def parse_params(name: str, texts: Mapping[str, str]) -> dict[str, Any]:
    """Parameters of method ``name`` given as text (``{"n_masks": "64", "layer": "none"}``) turned
    into values of their types; the generic ``seed``/``budget``/``perturbations_per_eval`` are
    integers. InputError for an unknown parameter or a value of the wrong type."""
    entry = _entry(name)
    by_name = {p.name: p for p in entry.params()}
    out: dict[str, Any] = {}
    for key, text in texts.items():
        if key in by_name:
            out[key] = _parse_value(name, by_name[key], str(text))
        elif key in GENERIC_PARAMS:
            out[key] = _parse_value(name, MethodParam(key, "int | None", None, ""), str(text))
        else:
            _own_params(entry, {key: text})  # raises the unknown-parameter error
    return out
