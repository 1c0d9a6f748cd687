"""Audits page: submit an audit (a dataset on the server, or a CSV of pairs with its images; the
face detector, and the FDR q and CI level of the kept maps' uncertainty), follow running ones,
cancel or delete jobs, and browse a finished audit: the detector and options it ran with, the
failure gallery first (with each pair's maps when the audit kept them, what is not significant
greyed out on request), the pairs dropped per reason, the summary (accuracy, Deletion/Insertion
with intervals, the mean curves, per-pair AUCs), then every pair sorted and filtered, exported as
CSV (the pairs, and the curves' points)."""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import streamlit as st

from dashboard import state, views
from explainer_service.api.client import JobInfo
from explainer_service.errors import InputError
from explainer_service.results import PairResult
from explainer_service.uncertainty import DEFAULT_LEVEL, DEFAULT_Q

DATASET = "A dataset on the server"
UPLOAD = "A CSV of pairs and its images"
ROWS_KEY = "audit_rows"
SUMMARY_KEY = "audit_summaries"
#: Kept maps read for the gallery, by "job id:pair index" (then by method).
KEPT_KEY = "audit_kept"
#: How many gallery pairs show their maps (each is one small GetResult page).
GALLERY_MAPS = 6
IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "ppm", "pgm"]
METRICS = ("deletion", "insertion")
KEEP_MAPS_LABEL = "Keep each pair's maps (shown in the failure gallery)"


def _options(detector: str, q_text: str, level_text: str, keeps_maps: bool) -> dict[str, Any] | None:
    """The audit's ``detector``, ``fdr_q`` and ``ci_level`` for ``client.submit_audit`` (``""``/0:
    the server's defaults), or None after one message: a field out of range, or a q or level
    while no maps are kept (``keeps_maps``: the box is ticked and a method chosen), which the
    server refuses."""
    try:
        fdr_q, ci_level = views.uncertainty_request(q_text, level_text)
    except InputError as e:
        st.error(str(e))
        return None
    if (fdr_q or ci_level) and not keeps_maps:
        st.error(f"FDR q and CI level state the uncertainty of the kept maps: tick \"{KEEP_MAPS_LABEL}\" and "
                 "choose a method, or leave them empty.")
        return None
    return {"detector": detector, "fdr_q": fdr_q, "ci_level": ci_level}


def _submit_form(client: state.DashboardClient) -> None:
    source = st.radio("Pairs from", [DATASET, UPLOAD], horizontal=True, key="audit.source")
    request: dict[str, Any] = {}
    if source == DATASET:
        request["dataset"] = st.text_input(
            "Dataset spec", placeholder="lfw-aligned:lfw", key="audit.dataset",
            help="A dataset under a folder the server allows (facexplain api --dataset-root), as facexplain "
            "evaluate --dataset takes it: lfw:PATH, lfw-aligned:PATH, cfp-fp:PATH, csv:FILE, bin:FILE")
    else:
        csv_file = st.file_uploader("Pairs CSV (header img1,img2,same)", type=["csv"], key="audit.csv")
        images = st.file_uploader("The images the CSV names", type=IMAGE_TYPES, accept_multiple_files=True,
                                  key="audit.images")
    models = state.attempt("listing the models", client.list_models) or []
    methods = state.attempt("listing the methods", client.list_methods) or []
    names = [m.name for m in models]
    default = next((i for i, m in enumerate(models) if m.is_default), 0)
    model = st.selectbox("Model", names, index=default, key="audit.model") if names else ""
    chosen = st.multiselect("Methods (none: verification only)", [m.name for m in methods], key="audit.methods")
    metrics = st.multiselect("Metrics", list(METRICS), default=list(METRICS), key="audit.metrics",
                             help="Deletion (lower is better) and Insertion (higher is better) AUC per pair and method")
    limit = int(st.number_input("First pairs only (0: all)", min_value=0, value=0, step=1, key="audit.limit"))
    keep_maps = st.checkbox(KEEP_MAPS_LABEL, key="audit.keep_maps",
                            help="The server keeps every pair's complete result per method (about 0.3 MB each); "
                            "needs at least one method")
    detector = st.selectbox("Face detector", views.DETECTOR_CHOICES, key="audit.detector",
                            format_func=views.detector_label,
                            help=views.DETECTOR_HELP + ". Pairs whose face is not found are dropped, counted per reason")
    with st.expander("Uncertainty of the kept maps"):
        q_text = st.text_input("FDR q", key="audit.fdr_q", placeholder=f"server default ({DEFAULT_Q:g})",
                               help="False-discovery rate of each kept CorrRISE map's significance mask "
                               "(Benjamini-Hochberg), in (0, 1); empty or 0: the server's default. Only with "
                               "\"Keep each pair's maps\": an audit that keeps no maps has no uncertainty")
        level_text = st.text_input("CI level", key="audit.ci_level", placeholder=f"server default ({DEFAULT_LEVEL:g})",
                                   help="Coverage of each kept map's per-pixel intervals, in (0, 1); empty or 0: "
                                   "the server's default. Only with \"Keep each pair's maps\"")
    if not st.button("Submit audit", type="primary", key="audit.submit"):
        return
    options = _options(detector or "", q_text, level_text, keep_maps and bool(chosen))
    if options is None:
        return
    if source == DATASET:
        if not request["dataset"].strip():
            st.error("Give a dataset spec (e.g. lfw-aligned:lfw).")
            return
        request["dataset"] = request["dataset"].strip()
    else:
        if csv_file is None:
            st.error("Upload the pairs CSV and its images.")
            return
        try:
            request["pairs"] = views.pairs_from_csv(csv_file.getvalue(), {f.name: f.getvalue() for f in images or ()})
        except InputError as e:
            st.error(str(e))
            return
    if keep_maps:
        request["keep_maps"] = bool(chosen)  # verification only has no maps to keep
    submitted = state.attempt("submitting the audit", client.submit_audit, model=model or "", methods=chosen,
                              metrics=metrics if chosen else [], limit=limit, **request, **options)
    if submitted is not None:
        st.session_state["audit.selected"] = submitted.job.id
        st.success(f"Audit {submitted.job.id[:12]} {'found on the server' if submitted.reused else 'queued'}.")


def _progress(client: state.DashboardClient, job_ids: list[str]) -> None:
    """Progress of the running audits (a fragment re-run every REFRESH_S seconds)."""
    finished = False
    for job_id in job_ids:
        job = state.attempt("following an audit", client.get_job, job_id)
        if job is None:
            continue
        fraction, text = views.progress_of(job)
        st.progress(fraction, text=f"{job_id[:12]}: {text}")
        finished = finished or job.final
    if finished:
        st.rerun()


def _kept(client: state.DashboardClient, job_id: str, index: int) -> dict[str, PairResult] | None:
    """Pair ``index``'s kept results by method (a one-row page read with its maps; cached), or
    None after a message when the read failed."""
    cache: dict[str, dict[str, PairResult]] = st.session_state.setdefault(KEPT_KEY, {})
    key = f"{job_id}:{index}"
    if key not in cache:
        page = state.attempt(f"reading the maps of pair {index}", client.audit_result, job_id,
                             page_token=str(index), page_size=1, maps=True)
        if page is None:
            return None
        cache[key] = views.kept_results(page.rows, index)
    return cache[key]


def _grey_masks(key: str, method: str, result: PairResult) -> tuple[np.ndarray, np.ndarray] | None:
    """A kept result's significance masks of A and B ((H, W) bool) when it has an uncertainty
    whose masks fit its maps and its grey-out checkbox (``key``) is ticked, else None."""
    unc = result.uncertainty
    if unc is None or result.s_a is None or result.s_b is None:
        return None
    if unc.a.significant is None or unc.b.significant is None:
        return None
    shapes = [np.shape(m) for m in (result.s_a, result.s_b, unc.a.significant, unc.b.significant)]
    if shapes[:2] != shapes[2:]:
        st.caption(f"{method}: the significance masks {shapes[2]}, {shapes[3]} do not fit the maps {shapes[0]}, "
                   f"{shapes[1]}: nothing to grey out.")
        return None
    grey = st.checkbox("Grey out what is not significant", key=key,
                       help=f"{method}: no colour where a pixel's correlation is not significant at the "
                       f"false-discovery rate q = {unc.q:g} (as facexplain explain --grey-insignificant draws "
                       "the figure)")
    return (unc.a.significant, unc.b.significant) if grey else None


@st.cache_data(show_spinner=False, max_entries=4)
def _relative_legend() -> bytes:
    return views.legend_png(1.0, label="value / the largest |value| of the pair's two maps")


def _gallery_maps(client: state.DashboardClient, job: JobInfo, gallery: list[dict[str, Any]]) -> None:
    """The maps of the first GALLERY_MAPS gallery pairs, when the audit kept them."""
    shown = [g for g in gallery if g["verdict"] != "failed"][:GALLERY_MAPS]
    if not job.methods or not shown:
        return
    for g in shown:
        kept = _kept(client, job.id, int(g["index"]))
        if kept is None:
            return
        if not kept:
            st.caption("This audit kept no maps (tick \"Keep each pair's maps\" when submitting one to see "
                       "them here).")
            return
        score = "-" if g["score"] is None else f"{g['score']:.4f}"
        st.markdown(f"**{g['verdict']}** · pair {g['index']} `{g['name']}` · score {score} · {g['decision']}")
        for method, result in kept.items():
            if result.s_a is None or result.s_b is None or result.face_a.chip is None or result.face_b.chip is None:
                continue
            significant = _grey_masks(f"audit.grey.{job.id}.{g['index']}.{method}", method, result)
            vmax = views.map_scale(result.s_a, result.s_b)  # the scale of the whole maps, greyed out or not
            parts = views.shown_parts(result.s_a, result.s_b, significant)
            chips = {"a": result.face_a.chip, "b": result.face_b.chip}
            images = [views.overlay(chips[face], parts[key], vmax=vmax) for key, face, _, _ in views.MAP_PARTS]
            grey = " (significant only)" if significant is not None else ""
            captions = [f"{method} · {title}{grey}" for _, _, _, title in views.MAP_PARTS]
            st.image(images, caption=captions, width=140)
    st.image(_relative_legend(), caption="Colour scale of the gallery's maps (each pair and method scaled to its "
             "largest value): blue dissimilar, red similar", width=320)


def _dropped(summary: dict[str, Any]) -> None:
    """The pairs dropped (not in the accuracy or the means) per reason, with the detector used,
    and the list of them; nothing when none was dropped."""
    by_reason = views.dropped_rows(summary)
    if not by_reason:
        return
    st.subheader("Dropped pairs")
    total = sum(int(r["pairs"]) for r in by_reason)
    detector = summary.get("detector") or "not stated by this summary"
    st.caption(f"{total} pair{'s' if total != 1 else ''} dropped (not in the accuracy or the means); "
               f"face detector: {detector}")
    st.dataframe(by_reason, hide_index=True, key="audit.dropped_reasons")
    listed = views.dropped_pairs(summary)
    if listed:
        with st.expander(f"The dropped pairs ({len(listed)})"):
            st.dataframe(listed, hide_index=True, key="audit.dropped")


def _finished(client: state.DashboardClient, job: JobInfo) -> None:
    summaries: dict[str, dict[str, Any]] = st.session_state.setdefault(SUMMARY_KEY, {})
    all_rows: dict[str, list[dict[str, Any]]] = st.session_state.setdefault(ROWS_KEY, {})
    if job.id not in summaries:
        page = state.attempt("reading the audit", client.audit_result, job.id, page_size=1)
        rows = state.attempt("reading the audit's pairs", lambda: list(client.audit_rows(job.id)))
        if page is None or page.summary is None or rows is None:
            return
        summaries[job.id], all_rows[job.id] = page.summary, rows
    summary, rows = summaries[job.id], all_rows[job.id]
    c = st.columns(5)
    c[0].metric("Accuracy", f"{summary['accuracy']:.3f}")
    c[1].metric("Pairs", summary["pairs"])
    c[2].metric("False matches", summary["false_matches"])
    c[3].metric("False non-matches", summary["false_non_matches"])
    c[4].metric("Failed pairs", summary["pairs_failed"])
    setting = views.audit_options_caption(summary)
    if setting:
        st.caption(setting)
    st.subheader("Failure gallery")
    gallery = views.gallery_rows(summary)
    if gallery:
        st.dataframe(gallery, hide_index=True, key="audit.gallery")
        _gallery_maps(client, job, gallery)
    else:
        st.write("No wrong or borderline pairs.")
    _dropped(summary)
    table = views.method_table(summary)
    if table:
        st.subheader("Deletion (lower is better) and Insertion (higher is better), 95 % intervals")
        st.dataframe([{k: r[k] for k in ("method", "deletion", "insertion", "pairs/s")} for r in table],
                     hide_index=True, key="audit.table")
        curves = views.curve_points(summary, audit=job.id[:12])
        chart = views.curve_chart(curves)
        if chart is not None:
            st.caption("Mean Deletion and Insertion curves over the matched pairs: the area under each is its "
                       "AUC in the table above.")
            st.altair_chart(chart)
            st.download_button("Download curves CSV", views.csv_bytes(curves),
                               file_name=f"audit-{job.id[:12]}-curves.csv", mime="text/csv",
                               key="audit.curves_csv")
        points = views.auc_points(rows)
        if points:
            with st.expander("Per-pair AUC by method"):
                st.altair_chart(
                    alt.Chart(alt.InlineData(values=points), title="Per-pair AUC by method")
                    .mark_boxplot()
                    .encode(x=alt.X("method:N"), y=alt.Y("auc:Q", title="AUC"), color="method:N", column="metric:N")
                )
    st.subheader("Pairs")
    flat = views.audit_rows(rows)
    f1, f2, f3, f4 = st.columns(4)
    decision = f1.selectbox("Decision", ["all", "match", "non-match", "unknown"], key="audit.decision")
    outcome = f2.selectbox("Outcome", ["all", "correct", "wrong", "failed"], key="audit.outcome")
    sortable = [c for c in dict.fromkeys(k for r in flat for k in r) if c not in ("name", "error")]
    sort_by = f3.selectbox("Sort by", sortable, key="audit.sort",
                           index=sortable.index("score") if "score" in sortable else 0)
    descending = f4.checkbox("Descending", value=True, key="audit.descending")
    selected = views.select_rows(flat, decision=decision, outcome=outcome, sort_by=sort_by, descending=descending)
    st.caption(f"{len(selected)} of {len(flat)} pairs")
    st.dataframe(selected, hide_index=True, key="audit.rows")
    st.download_button("Download pairs CSV", views.csv_bytes(flat), file_name=f"audit-{job.id[:12]}.csv",
                       mime="text/csv", key="audit.csv_download")


def main() -> None:
    st.title("Audits")
    client = state.client()
    if client is None:
        return
    with st.expander("Submit an audit"):
        _submit_form(client)
    jobs = state.attempt("listing the audits", client.list_jobs, kind="audit")
    if jobs is None:
        return
    if not jobs:
        st.info("No audits yet: submit one above.")
        return
    st.dataframe(views.job_rows(jobs), hide_index=True, key="audit.jobs")
    running = [j.id for j in jobs if not j.final]
    if running:
        st.fragment(run_every=state.REFRESH_S)(_progress)(client, running)
    ids = [j.id for j in jobs]
    by_id = {j.id: j for j in jobs}
    if st.session_state.get("audit.selected") not in ids:
        st.session_state["audit.selected"] = ids[0]
    # no state in the label: the browser keeps an option's first label while the key stays (a done
    # audit read "queued"); the state is in the table above and the section below
    job_id = st.selectbox("Audit", ids, key="audit.selected",
                          format_func=lambda i: f"{i[:12]} · {by_id[i].model} · "
                          f"{', '.join(by_id[i].methods) or 'verification'}")
    job = by_id[job_id]
    a1, a2 = st.columns(2)
    if a1.button("Cancel", disabled=job.final, key="audit.cancel"):
        if state.attempt("cancelling the audit", client.cancel, job_id) is not None:
            st.rerun()
    if a2.button("Delete", key="audit.delete"):
        if state.attempt("deleting the audit", client.delete, job_id) is not None:
            st.rerun()
    if job.state == "done":
        _finished(client, job)
    elif job.final:
        st.error(f"This audit {job.state}: {job.error.message if job.error else 'no reason given'}")
    else:
        st.info("This audit is still running; its results appear here when it finishes.")


main()
