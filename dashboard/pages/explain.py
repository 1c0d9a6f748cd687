"""Explain page: upload a pair (or pick one from a dataset the server allows: its spec, then the
pair by name and same/different; its images are fetched and sent as an upload's would be, so the
job id is still the content hash of the bytes), choose the model, a method (and a second one to
compare) with its parameters, the face detector and the uncertainty's FDR q and CI level, follow
the job (progress and the partial maps), then see the aligned faces (with the detector that found
them), score, threshold, decision and the four maps, with a map's uncertainty (split-half
agreement, share of significant pixels, and what is not significant greyed out on request),
inspect a region's correlation and download the files."""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from dashboard import state, views
from explainer_service.api.client import DatasetPair, PartialMaps
from explainer_service.errors import FacexplainError, InputError
from explainer_service.methods.registry import MethodInfo
from explainer_service.results import PairResult
from explainer_service.uncertainty import DEFAULT_LEVEL, DEFAULT_Q

NO_SECOND = "(none)"
FAILED_KEY = "explain_failed"
PARTIAL_KEY = "explain_partial"
FILES_KEY = "explain_files"
IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "ppm", "pgm"]
UPLOAD = "Upload two images"
FROM_DATASET = "From a dataset on the server"
SHOW = ("all pairs", "same person", "different people")
#: Listed pairs by dataset spec (read page by page from ListDatasetPairs; kept for the session).
DATASET_PAIRS_KEY = "explain_dataset_pairs"
#: Most pairs of one dataset the picker lists (LFW's View 2 has 6000).
MAX_LISTED_PAIRS = 20_000


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _param_inputs(info: MethodInfo, prefix: str) -> dict[str, Any]:
    """One labelled widget per parameter of ``info``; their values by parameter name."""
    values: dict[str, Any] = {}
    for p in info.params:
        kind = views.param_widget_kind(p)
        key = f"{prefix}.{info.name}.{p.name}"
        help_text = f"{p.help} ({p.type}; default {_default_text(p.default)})"
        if kind == "int":
            values[p.name] = st.number_input(p.name, value=int(p.default), step=1, help=help_text, key=key)
        elif kind == "float":
            values[p.name] = st.number_input(p.name, value=float(p.default), help=help_text, key=key, format="%g")
        elif kind == "bool":
            values[p.name] = st.checkbox(p.name, value=bool(p.default), help=help_text, key=key)
        else:
            values[p.name] = st.text_input(p.name, value=_default_text(p.default), help=help_text, key=key)
    return values


def _uploads(up_a: Any, up_b: Any) -> tuple[tuple[bytes, bytes], tuple[str, str]] | None:
    """Both uploads' bytes and names, checked; None after saying what is wrong."""
    if up_a is None or up_b is None:
        st.error("Upload both images (A and B) first.")
        return None
    data = []
    for label, up in (("image A", up_a), ("image B", up_b)):
        content = up.getvalue()
        try:
            views.check_image_upload(f"{label} ({up.name})", content)
        except InputError as e:
            st.error(str(e))
            return None
        data.append(content)
    return (data[0], data[1]), (str(up_a.name), str(up_b.name))


def _list_pairs(client: state.DashboardClient, spec: str) -> list[DatasetPair] | None:
    """Every pair of dataset ``spec`` (up to MAX_LISTED_PAIRS), page after page; None after a
    message when the server refuses."""
    pairs: list[DatasetPair] = []
    token = ""
    while len(pairs) < MAX_LISTED_PAIRS:
        page = state.attempt(f"listing the pairs of {spec}", client.list_dataset_pairs, spec, page_token=token,
                             page_size=1000)
        if page is None:
            return None
        pairs.extend(page.pairs)
        token = page.next_page_token
        if not token:
            break
    return pairs[:MAX_LISTED_PAIRS]


def _dataset_picker(client: state.DashboardClient) -> tuple[str, int] | None:
    """The dataset spec field and the pair picker: ``(spec, pair index)`` once a pair is chosen."""
    spec = st.text_input(
        "Dataset spec", placeholder="lfw-aligned:lfw", key="explain.dataset",
        help="A dataset under a folder the server allows (facexplain api --dataset-root), as facexplain "
        "evaluate --dataset takes it: lfw:PATH, lfw-aligned:PATH, cfp-fp:PATH, csv:FILE").strip()
    listed: dict[str, list[DatasetPair]] = st.session_state.setdefault(DATASET_PAIRS_KEY, {})
    if st.button("List its pairs", key="explain.list_pairs"):
        if not spec:
            st.error("Give a dataset spec (e.g. lfw-aligned:lfw).")
        else:
            pairs = _list_pairs(client, spec)
            if pairs is not None:
                listed[spec] = pairs
    pairs = listed.get(spec)
    if pairs is None:
        st.caption("Give the spec of a dataset the server allows, then list its pairs.")
        return None
    if not pairs:
        st.warning(f"{spec} has no pairs.")
        return None
    show = st.radio("Show", SHOW, horizontal=True, key="explain.show")
    shown = [p for p in pairs if show == SHOW[0] or p.same == (show == SHOW[1])]
    if not shown:
        st.info(f"No pair of {spec} shows {show}.")
        return None
    by_index = {p.index: p for p in shown}
    index = st.selectbox("Pair", list(by_index), key="explain.pair",
                         format_func=lambda i: views.pair_label(i, by_index[i].name, by_index[i].same))
    st.caption(f"{len(shown)} of {len(pairs)} pairs of {spec}"
               + (f" (the first {MAX_LISTED_PAIRS} listed)" if len(pairs) >= MAX_LISTED_PAIRS else ""))
    return (spec, int(index)) if index is not None else None


def _dataset_images(client: state.DashboardClient, chosen: tuple[str, int] | None
                    ) -> tuple[tuple[bytes, bytes], tuple[str, str]] | None:
    """The chosen dataset pair's image bytes and names, checked as uploads are; None after saying
    what is wrong."""
    if chosen is None:
        st.error("Choose a dataset and one of its pairs first.")
        return None
    spec, index = chosen
    pair = state.attempt(f"reading pair {index} of {spec}", client.dataset_pair, spec, index)
    if pair is None:
        return None
    for label, name, content in (("image A", pair.name_a, pair.image_a), ("image B", pair.name_b, pair.image_b)):
        try:
            views.check_image_upload(f"{label} ({name})", content)
        except InputError as e:
            st.error(str(e))
            return None
    return (pair.image_a, pair.image_b), (pair.name_a, pair.name_b)


def _options(detector: str, q_text: str, level_text: str) -> dict[str, Any] | None:
    """The request's detector and uncertainty options (``client.explain``'s ``detector``,
    ``fdr_q``, ``ci_level``; ``""``/0: the server's defaults), or None after saying which field is
    wrong."""
    try:
        fdr_q, ci_level = views.uncertainty_request(q_text, level_text)
    except InputError as e:
        st.error(str(e))
        return None
    return {"detector": detector, "fdr_q": fdr_q, "ci_level": ci_level}


def _submit(client: state.DashboardClient, pair: tuple[bytes, bytes], names: tuple[str, str], model: str,
            chosen: list[tuple[MethodInfo, dict[str, Any]]], force: bool, options: dict[str, Any]
            ) -> list[tuple[str, str]] | None:
    """Submit one job per chosen method (with ``options``: see :func:`_options`); their (method,
    job id), or None (nothing replaced) when a parameter or a request is refused."""
    jobs = []
    for info, values in chosen:
        try:
            params = views.params_from_values(info, values)
        except InputError as e:
            st.error(str(e))
            return None
        submitted = state.attempt(f"submitting {info.name}", client.explain, pair[0], pair[1], model=model,
                                  method=info.name, params=params, force=force, names=names, **options)
        if submitted is None:
            return None
        jobs.append((info.name, submitted.job.id))
    return jobs


def _partial(client: state.DashboardClient, job_id: str) -> PartialMaps | None:
    """The running maps of a CorrRISE job now (the first update of WatchJob), or None."""
    stream = client.watch(job_id, partial_maps=True, timeout=2.0)
    try:
        for update in stream:
            return update.partial
    except FacexplainError:
        return None  # best effort: the progress bar still moves
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return None


def _follow(client: state.DashboardClient) -> None:
    """Progress of the jobs not finished yet (a fragment re-run every REFRESH_S seconds)."""
    results: dict[str, PairResult] = st.session_state.setdefault(state.RESULTS_KEY, {})
    failed: dict[str, str] = st.session_state.setdefault(FAILED_KEY, {})
    partials: dict[str, PartialMaps] = st.session_state.setdefault(PARTIAL_KEY, {})
    changed = False
    for method, job_id in st.session_state.get(state.EXPLAIN_JOBS_KEY, []):
        if job_id in results or job_id in failed:
            continue
        job = state.attempt(f"following the {method} job", client.get_job, job_id)
        if job is None:
            continue
        fraction, text = views.progress_of(job)
        st.progress(fraction, text=f"{method}: {text}")
        if job.state == "done":
            result = state.attempt(f"fetching the {method} result", client.get_result, job_id)
            if result is not None:
                results[job_id] = result
                changed = True
        elif job.final:
            why = job.error.message if job.error is not None else "cancelled"
            failed[job_id] = f"The {method} job {job.state}: {why}"
            changed = True
        elif job.unit == "masks" and job.done > 0:  # a sharded method: its running maps as shards complete
            partial = _partial(client, job_id)
            if partial is not None:
                partials[job_id] = partial
            shown = partials.get(job_id)
            if shown is not None and shown.s_a.size:
                vmax = views.map_scale(shown.s_a, shown.s_b)
                st.caption(f"Partial maps over {shown.masks} masks (they sharpen as shards complete)")
                cols = st.columns(2)
                cols[0].image(views.overlay(None, shown.s_a, vmax=vmax), caption="A (partial)", width=180)
                cols[1].image(views.overlay(None, shown.s_b, vmax=vmax), caption="B (partial)", width=180)
    if changed:
        st.rerun()


@st.cache_data(show_spinner=False, max_entries=64)
def _legend(vmax: float) -> bytes:
    return views.legend_png(vmax)


def _files(job_id: str, result: PairResult, grey: bool) -> dict[str, tuple[bytes, str]] | None:
    cache: dict[str, dict[str, tuple[bytes, str]]] = st.session_state.setdefault(FILES_KEY, {})
    key = f"{job_id}.grey" if grey else job_id
    if key not in cache:
        files = state.attempt("preparing the downloads", views.result_files, result, grey_insignificant=grey)
        if files is None:
            return None
        cache[key] = files
    return cache[key]


def _uncertainty(job_id: str, result: PairResult, s_a: np.ndarray, s_b: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """A result's uncertainty, when it has one: what it rests on, the split-half agreement and the
    share of significant pixels per face, and the grey-out checkbox; the significance masks of A
    and B ((H, W) bool, the shapes of its maps ``s_a``, ``s_b``) when the checkbox is ticked, else
    None."""
    unc = result.uncertainty
    if unc is None:
        return None
    st.caption(views.uncertainty_caption(unc))
    st.dataframe(views.uncertainty_rows(unc), hide_index=True)
    if unc.a.significant is None or unc.b.significant is None:
        st.caption("The significance masks were not fetched: nothing to grey out.")
        return None
    shapes = [np.shape(m) for m in (s_a, s_b, unc.a.significant, unc.b.significant)]
    if shapes[:2] != shapes[2:]:
        st.caption(f"The significance masks {shapes[2]}, {shapes[3]} do not fit the maps {shapes[0]}, {shapes[1]}: "
                   "nothing to grey out.")
        return None
    grey = st.checkbox("Grey out what is not significant", key=f"grey.{job_id}",
                       help="No colour where a pixel's correlation is not significant at the false-discovery "
                       "rate q (as facexplain explain --grey-insignificant draws the figure)")
    return (unc.a.significant, unc.b.significant) if grey else None


def _show(job_id: str, result: PairResult, opacity: float) -> None:
    """One result: verdict, aligned faces, the uncertainty, the four maps with their legend, a
    region's value, files."""
    st.subheader(f"{result.method} · {result.model}")
    c1, c2, c3 = st.columns(3)
    c1.metric("Score (cosine)", f"{result.score:.4f}")
    c2.metric("Threshold", "none" if result.threshold is None else f"{result.threshold:.4f}")
    c3.metric("Decision", result.decision)
    chip_a, chip_b = result.face_a.chip, result.face_b.chip
    if chip_a is None or chip_b is None or result.s_a is None or result.s_b is None:
        st.warning("This result has no maps.")
        return
    st.image([chip_a, chip_b], caption=[views.face_caption("A", result.face_a), views.face_caption("B", result.face_b)],
             width=150)
    significant = _uncertainty(job_id, result, result.s_a, result.s_b)
    vmax = views.map_scale(result.s_a, result.s_b)  # the scale of the whole maps, greyed out or not
    parts = views.shown_parts(result.s_a, result.s_b, significant)
    chips = {"a": chip_a, "b": chip_b}
    for row in (views.MAP_PARTS[:2], views.MAP_PARTS[2:]):
        cols = st.columns(2)
        for col, (key, face, _part, title) in zip(cols, row, strict=True):
            col.image(views.overlay(chips[face], parts[key], vmax=vmax, opacity=opacity), caption=title, width=200)
    st.image(_legend(round(vmax, 6)), caption="Colour scale: blue dissimilar, red similar (0 transparent)"
             + ("; not significant: transparent" if significant is not None else ""))
    with st.expander("A region's correlation"):
        face = st.radio("Face", ["A", "B"], horizontal=True, key=f"region.face.{job_id}")
        values = result.s_a if face == "A" else result.s_b
        st.altair_chart(views.heatmap_chart(values, vmax=vmax, title=f"{face}: hover a block for its correlation"))
        h, w = values.shape
        x = int(st.number_input("x (pixel)", min_value=0, max_value=w - 1, value=w // 2, key=f"region.x.{job_id}"))
        y = int(st.number_input("y (pixel)", min_value=0, max_value=h - 1, value=h // 2, key=f"region.y.{job_id}"))
        st.write(f"Correlation around ({x}, {y}) on {face} (5x5 mean): **{views.region_value(values, x, y):.4f}**")
        unc = result.uncertainty
        mask = None if unc is None else (unc.a if face == "A" else unc.b).significant
        if unc is not None and mask is not None and mask.shape == values.shape:
            st.caption(f"Pixel ({x}, {y}) is {'' if mask[y, x] else 'not '}significant (q = {unc.q:g})")
    files = _files(job_id, result, significant is not None)
    if files is not None:
        for name, (data, mime) in files.items():
            st.download_button(f"Download {name}", data, file_name=name, mime=mime, key=f"dl.{job_id}.{name}")


def main() -> None:
    st.title("Explain a pair")
    client = state.client()
    if client is None:
        return
    models = state.attempt("listing the models", client.list_models) or []
    methods = state.attempt("listing the methods", client.list_methods) or []
    if not methods:
        st.info("The server lists no methods; nothing can be explained.")
        return
    source = st.radio("Images", [UPLOAD, FROM_DATASET], horizontal=True, key="explain.source")
    up_a = up_b = None
    picked: tuple[str, int] | None = None
    if source == UPLOAD:
        col_a, col_b = st.columns(2)
        up_a = col_a.file_uploader("Image A", type=IMAGE_TYPES, key="image_a")
        up_b = col_b.file_uploader("Image B", type=IMAGE_TYPES, key="image_b")
        st.caption("Any photo with a face (it is detected and aligned on the server), or an aligned face chip.")
    else:
        picked = _dataset_picker(client)
    names = [m.name for m in models]
    default = next((i for i, m in enumerate(models) if m.is_default), 0)
    model = st.selectbox("Model", names, index=default, key="model",
                         format_func=lambda n: n + ("" if next(m for m in models if m.name == n).ready
                                                    else " (not ready)")) if names else ""
    by_name = {m.name: m for m in methods}
    c1, c2 = st.columns(2)
    first = c1.selectbox("Method", list(by_name), key="method", format_func=lambda n: f"{by_name[n].title} ({n})")
    second = c2.selectbox("Compare with (optional)", [NO_SECOND, *[n for n in by_name if n != first]],
                          key="method2")
    chosen = []
    with st.expander(f"Parameters of {by_name[first].title}"):
        chosen.append((by_name[first], _param_inputs(by_name[first], "p1")))
    if second != NO_SECOND:
        with st.expander(f"Parameters of {by_name[second].title}"):
            chosen.append((by_name[second], _param_inputs(by_name[second], "p2")))
    detector = st.selectbox("Face detector", views.DETECTOR_CHOICES, key="detector", format_func=views.detector_label,
                            help=views.DETECTOR_HELP)
    with st.expander("Uncertainty"):
        q_text = st.text_input("FDR q", key="fdr_q", placeholder=f"server default ({DEFAULT_Q:g})",
                               help="False-discovery rate of the significance masks (Benjamini-Hochberg), in "
                               "(0, 1); empty or 0: the server's default")
        level_text = st.text_input("CI level", key="ci_level", placeholder=f"server default ({DEFAULT_LEVEL:g})",
                                   help="Coverage of the per-pixel intervals, in (0, 1); empty or 0: the server's "
                                   "default")
    force = st.checkbox("Recompute even if the server has this result", key="force")
    if st.button("Explain", type="primary", key="submit"):
        options = _options(detector or "", q_text, level_text)
        uploaded = None
        if options is not None:
            uploaded = _uploads(up_a, up_b) if source == UPLOAD else _dataset_images(client, picked)
        if options is not None and uploaded is not None:
            pair, names_ab = uploaded
            submitted = _submit(client, pair, names_ab, model or "", chosen, force, options)
            if submitted is not None:
                st.session_state[state.EXPLAIN_JOBS_KEY] = submitted
    jobs: list[tuple[str, str]] = st.session_state.get(state.EXPLAIN_JOBS_KEY, [])
    results: dict[str, PairResult] = st.session_state.get(state.RESULTS_KEY, {})
    failed: dict[str, str] = st.session_state.get(FAILED_KEY, {})
    if any(j not in results and j not in failed for _, j in jobs):
        st.fragment(run_every=state.REFRESH_S)(_follow)(client)
    for _, job_id in jobs:
        if job_id in failed:
            st.error(failed[job_id])
    shown = [(j, results[j]) for _, j in jobs if j in results]
    if shown:
        opacity = st.slider("Map opacity", 0.0, 1.0, 0.8, 0.05, key="opacity")
        for col, (job_id, result) in zip(st.columns(len(shown)), shown, strict=True):
            with col:
                _show(job_id, result, opacity)


main()
