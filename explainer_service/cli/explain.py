"""``facexplain explain`` and ``facexplain embed``: one pair explained (any method), images embedded.

Thin shims: parse; validate before any work (input files, output folder, limits, method and
parameters, then both images decoded and aligned before a model is opened or a server started);
call the library (``pipeline.explain_pair``, ``pipeline.embed_chips``); write and format.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from typing import Any

from ..errors import EXIT_INPUT, EXIT_OK, InputError, LimitExceededError
from ..methods.registry import METHOD_NAMES
from .common import (
    add_model_args,
    aligner,
    check_input_files,
    check_out_dir,
    engine_label,
    open_model,
    positive_int,
    terminal_progress,
)

#: CorrRISE's own options: namespace attribute -> (option, registry parameter).
CORRRISE_OPTIONS: dict[str, tuple[str, str]] = {
    "masks": ("--masks", "n_masks"),
    "patches": ("--patches", "patches"),
    "patch_size": ("--patch-size", "patch_size"),
    "values": ("--values", "values"),
    "per_pixel": ("--per-pixel", "per_pixel"),
    "inside": ("--inside", "clip_at_border"),
    "correlation": ("--correlation", "correlation"),
}
#: Methods whose explanations carry an uncertainty (``--grey-insignificant``).
METHODS_WITH_UNCERTAINTY = ("corrrise",)
#: Images aligned before each model call of ``embed``.
EMBED_CHUNK = 64


def register_explain(sub: Any) -> None:
    ex = sub.add_parser(
        "explain",
        help="explain why the model says match or non-match for A and B",
        description="Explain a face pair with any method (facexplain methods lists them and their "
        "parameters); writes summary.json, maps.npz and figure.png into --out.",
    )
    ex.add_argument("image_a", help="image A (a photo, or an aligned crop)")
    ex.add_argument("image_b", help="image B")
    ex.add_argument("--out", required=True, help="output folder (summary.json, maps.npz, figure.png)")
    add_model_args(ex)
    ex.add_argument("--method", default="corrrise", choices=METHOD_NAMES,
                    help="explanation method (default corrrise)")
    ex.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a parameter of the method (repeatable; see facexplain methods)")
    ex.add_argument("--budget", type=positive_int, default=None,
                    help="perturbations per face of a sampling method (CorrRISE/RISE masks, LIME samples)")
    ex.add_argument("--seed", type=int, default=None, help="seed of the random perturbations (default 0)")
    corr = ex.add_argument_group("CorrRISE options (--method corrrise)")
    corr.add_argument("--masks", type=positive_int, default=None, help="number of masks N (default 500, the paper's)")
    corr.add_argument("--patches", type=positive_int, default=None, help="patches per mask (default 10, the paper's)")
    corr.add_argument("--patch-size", type=positive_int, default=None,
                      help="patch side in chip pixels (default: paper's 30 px on 112 px, scaled)")
    corr.add_argument("--values", default=None, choices=["uniform", "binary"],
                      help="patch values: uniform in [0,1] (paper, default) or binary (0)")
    corr.add_argument("--per-pixel", action="store_true", help="random value per pixel instead of per patch")
    corr.add_argument("--inside", action="store_true", help="keep patches fully inside the chip")
    corr.add_argument("--correlation", default=None, choices=["pearson", "spearman"],
                      help="per-pixel correlation (default pearson)")
    corr.add_argument("--until-agreement", type=float, default=None, metavar="R",
                      help="early stopping: draw shards of 64 masks until the split-half agreement predicted "
                      "for both maps reaches R in (0, 1), or --max-masks are spent (summary.json: masks used, "
                      "params.stopped_early, params.agreement_reached)")
    corr.add_argument("--max-masks", type=positive_int, default=None, metavar="M",
                      help="with --until-agreement: the most masks to draw (at least 64)")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    ex.add_argument("--grey-insignificant", action="store_true",
                    help="the figure greys out pixels whose correlation is not significant (Benjamini-Hochberg "
                    "false-discovery rate --fdr-q; --method corrrise)")
    add_uncertainty_args(ex)
    where = ex.add_mutually_exclusive_group()
    where.add_argument("--client-masks", action="store_true",
                       help="through Triton: send masked chips (default with the embedded server)")
    where.add_argument("--server-masks", action="store_true",
                       help="through Triton: the server makes the masks (default with --triton)")
    ex.set_defaults(func=_cmd_explain)


def register_embed(sub: Any) -> None:
    em = sub.add_parser(
        "embed",
        help="print one JSON line per image with its embedding",
        description="Print one JSON line per image ({\"path\", \"detector\", \"confidence\", \"embedding\"}: "
        "the detector that found the face and its score, null for a pre-aligned crop) on stdout. An image that "
        "cannot be used (unreadable, no face...) is reported on its own line on stderr and the others "
        "go on; with several images a last line on stderr says 'N embedded, M failed'. Exit code 0 "
        "when every image was embedded, 2 when some failed on bad input.",
    )
    em.add_argument("images", nargs="+", help="image files")
    add_model_args(em)
    em.set_defaults(func=_cmd_embed)


def add_uncertainty_args(parser: Any) -> None:
    """``--fdr-q Q`` and ``--ci-level L``: how the maps' uncertainty is stated (CorrRISE)."""
    parser.add_argument("--fdr-q", type=float, default=None, metavar="Q",
                        help="false-discovery rate of the significance masks (Benjamini-Hochberg; default 0.05)")
    parser.add_argument("--ci-level", type=float, default=None, metavar="L",
                        help="coverage of the per-pixel intervals of the correlation (default 0.95)")


def uncertainty_options(args: argparse.Namespace) -> Any:
    """``--fdr-q``/``--ci-level`` as :class:`~explainer_service.uncertainty.UncertaintyOptions`
    (None when neither is given); InputError naming the option for a value outside (0, 1)."""
    import math

    from ..uncertainty import UncertaintyOptions

    q, level = getattr(args, "fdr_q", None), getattr(args, "ci_level", None)
    for option, value in (("--fdr-q", q), ("--ci-level", level)):
        if value is not None and not (math.isfinite(value) and 0.0 < value < 1.0):
            raise InputError(f"{option} must be in (0, 1), got {value!r}")
    if q is None and level is None:
        return None
    defaults = UncertaintyOptions()
    return UncertaintyOptions(q=defaults.q if q is None else q, level=defaults.level if level is None else level)


# -- explain --------------------------------------------------------------------------------------


def _corrrise_params(args: argparse.Namespace) -> dict[str, Any]:
    """The CorrRISE options given on the command line, as registry parameters."""
    params: dict[str, Any] = {}
    for attr, (_option, name) in CORRRISE_OPTIONS.items():
        value = getattr(args, attr, None)
        if value is None or value is False:
            continue
        params[name] = (not value) if attr == "inside" else value
    return params


def _parse_param_texts(method: str, texts: list[str]) -> dict[str, Any]:
    from ..methods import parse_params

    raw: dict[str, str] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--param {text!r}: expected NAME=VALUE")
        if key in raw:
            raise InputError(f"--param {key} given twice")
        raw[key] = value
    return parse_params(method, raw)


def method_params(args: argparse.Namespace) -> dict[str, Any]:
    """The method's parameters from the options (CorrRISE's own, ``--seed``, ``--budget``,
    ``--param``); InputError for a CorrRISE option with another method, a malformed or unknown
    ``--param``, or one given twice."""
    method = args.method
    own = _corrrise_params(args)
    if own and method != "corrrise":
        options = [opt for attr, (opt, _n) in CORRRISE_OPTIONS.items() if getattr(args, attr, None) not in (None, False)]
        raise InputError(
            f"{', '.join(options)}: CorrRISE options, not for --method {method} "
            f"(use --param NAME=VALUE, or --budget; facexplain methods lists {method}'s parameters)"
        )
    params: dict[str, Any] = dict(own)
    if args.seed is not None:
        params["seed"] = args.seed
    if args.budget is not None:
        params["budget"] = args.budget
    reverse = {name: opt for opt, name in CORRRISE_OPTIONS.values()}
    reverse.update({"seed": "--seed", "budget": "--budget"})
    for key, value in _parse_param_texts(method, list(args.param)).items():
        if key in params:
            raise InputError(f"--param {key} conflicts with {reverse.get(key, key)}")
        params[key] = value
    return params


def until_options(
    args: argparse.Namespace, params: dict[str, Any], *, local_limit: bool = True
) -> tuple[float, int] | None:
    """``(R, M)`` of ``--until-agreement R --max-masks M``, or None without them; InputError
    naming the option for a value out of range, a missing or conflicting option (``--masks``,
    ``--budget``, ``--param n_masks``: M sets the masks) or another method than corrrise;
    LimitExceededError for M over ``Settings.limits.max_masks`` (``local_limit``; a client
    leaves the limit to its server)."""
    import math

    from ..methods.corrrise import DEFAULT_UNTIL_STEP, check_until
    from ..settings import get_settings

    agreement, max_masks = args.until_agreement, args.max_masks
    if agreement is None:
        if max_masks is not None:
            raise InputError("--max-masks needs --until-agreement R (early stopping)")
        return None
    if not (math.isfinite(agreement) and 0.0 < agreement < 1.0):
        raise InputError(f"--until-agreement must be in (0, 1), got {agreement!r}")
    if args.method != "corrrise":
        raise InputError(f"--until-agreement: a CorrRISE option, not for --method {args.method}")
    if max_masks is None:
        raise InputError("--until-agreement needs --max-masks M (the most masks to draw)")
    if max_masks < DEFAULT_UNTIL_STEP:
        raise InputError(f"--max-masks must be at least {DEFAULT_UNTIL_STEP} (masks per step), got {max_masks}")
    limit = get_settings().limits.max_masks
    if local_limit and max_masks > limit:
        raise LimitExceededError(
            f"--max-masks {max_masks} is over the limit {limit} (set FACEXPLAIN_MAX_MASKS to change it)"
        )
    if "n_masks" in params or "budget" in params:
        raise InputError("--until-agreement: the masks are set by --max-masks, not by --masks, --budget or n_masks")
    check_until(agreement, max_masks, DEFAULT_UNTIL_STEP)
    return float(agreement), int(max_masks)


def _cmd_explain(args: argparse.Namespace) -> int:
    from ..methods import check_params
    from ..models.registry import get_spec
    from ..pipeline import align_image, explain_pair
    from ..results import Timing

    # 1. everything that can be checked without pixels: files, output folder, method, parameters
    check_input_files([args.image_a, args.image_b])
    params = method_params(args)
    if args.grey_insignificant and args.method not in METHODS_WITH_UNCERTAINTY:
        raise InputError(f"--grey-insignificant needs a method whose maps carry an uncertainty "
                         f"({', '.join(METHODS_WITH_UNCERTAINTY)}), not {args.method}")
    until = until_options(args, params)
    options = uncertainty_options(args)
    if options is not None and args.method not in METHODS_WITH_UNCERTAINTY:
        raise InputError(f"--fdr-q/--ci-level need a method whose maps carry an uncertainty "
                         f"({', '.join(METHODS_WITH_UNCERTAINTY)}), not {args.method}")
    spec = get_spec(args.model)
    check_params(args.method, spec.chip.size, **params, **({} if until is None else {"n_masks": until[1]}))
    out = check_out_dir(args.out)
    # 2. both images decoded and aligned before a model is opened (a server may take seconds)
    face_aligner = aligner(args)
    t0 = time.perf_counter()
    face_a = align_image(args.image_a, spec.chip, aligner=face_aligner)
    face_b = align_image(args.image_b, spec.chip, aligner=face_aligner)
    align_s = time.perf_counter() - t0
    # 3. the explanation
    with open_model(args) as model, terminal_progress(args, args.method) as progress:
        if until is None and options is None:
            result = explain_pair(
                face_a, face_b, model, args.method, params, progress=progress, engine=engine_label(args)
            )
        else:
            result = _explain_with(face_a, face_b, model, args.method, params, until, options, progress,
                                   engine_label(args))
    result = result.with_timing(Timing(align_s=align_s, explain_s=result.timing.explain_s))
    paths = result.write(out, grey_insignificant=args.grey_insignificant)
    thr = "none" if result.threshold is None else f"{result.threshold:.4f}"
    print(f"score {result.score:.4f}  threshold {thr}  decision {result.decision}")
    print(f"wrote {paths['summary']}, {paths['maps']}, {paths['figure']} ({result.timing.total_s:.1f} s)")
    return EXIT_OK


def _explain_with(
    face_a: Any, face_b: Any, model: Any, method: str, params: dict[str, Any], until: tuple[float, int] | None,
    options: Any, progress: Any, engine: str,
) -> Any:
    """The method's explanation as a PairResult, with early stopping (:meth:`CorrRISE.attribute_until`)
    and its uncertainty stated at ``options`` (``explanation.restate``) when given."""
    from ..explanation import restate
    from ..methods import build
    from ..methods.corrrise import CorrRISE
    from ..pipeline import model_info
    from ..results import FaceRecord, PairResult, Timing

    t0 = time.perf_counter()
    if until is None:
        explanation = build(method, model, **params).attribute(face_a.chip, face_b.chip, progress=progress)
    else:
        agreement, max_masks = until
        explainer = build("corrrise", model, **params, n_masks=max_masks)
        if not isinstance(explainer, CorrRISE):
            raise InputError("--until-agreement needs --method corrrise")
        explanation = explainer.attribute_until(face_a.chip, face_b.chip, agreement=agreement, progress=progress)
    if options is not None:
        explanation = restate(explanation, options)
    return PairResult.from_explanation(
        explanation, FaceRecord.from_aligned(face_a), FaceRecord.from_aligned(face_b), model_info(model.spec),
        engine=engine, server_masks=bool(getattr(model, "server_masks", False)),
        timing=Timing(align_s=0.0, explain_s=time.perf_counter() - t0),
    )


# -- embed ----------------------------------------------------------------------------------------


def _face_fields(face: Any) -> dict[str, Any]:
    """What an embed line says about how the face was found: ``detector`` (None for a pre-aligned
    crop, which is not detected) and ``confidence`` (the detector's score on its own scale, None
    when it gives none)."""
    confidence = face.confidence
    return {"detector": face.detector, "confidence": None if confidence is None else round(float(confidence), 6)}


def _cmd_embed(args: argparse.Namespace) -> int:
    from ..models.registry import get_spec
    from ..pipeline import align_image, embed_chips
    from . import PROG, error_line

    spec = get_spec(args.model)
    face_aligner = aligner(args)
    embedded = failed = 0
    pending: list[tuple[str, Any]] = []  # (path, AlignedFace)
    with ExitStack() as stack:
        model: Any = None

        def flush() -> None:
            # the model is opened (a server started) only once a first image is ready for it
            nonlocal model, embedded
            if not pending:
                return
            if model is None:
                model = stack.enter_context(open_model(args))
            embeddings = embed_chips([face.chip for _path, face in pending], model)
            for (path, face), emb in zip(pending, embeddings, strict=True):
                print(json.dumps({"path": path, **_face_fields(face),
                                  "embedding": [round(float(v), 7) for v in emb]}), flush=True)
            embedded += len(pending)
            pending.clear()

        for path in args.images:
            try:
                check_input_files([path])
                face = align_image(path, spec.chip, aligner=face_aligner)
            except InputError as e:
                flush()  # the lines keep the order of the images
                print(f"{PROG}: error: {error_line(e)}", file=sys.stderr, flush=True)
                failed += 1
                continue
            pending.append((path, face))
            if len(pending) >= EMBED_CHUNK:
                flush()
        flush()
    if len(args.images) > 1:
        print(f"{PROG}: {embedded} embedded, {failed} failed", file=sys.stderr, flush=True)
    return EXIT_INPUT if failed else EXIT_OK
