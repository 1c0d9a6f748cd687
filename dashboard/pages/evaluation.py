"""Evaluation page: Table-1-style Deletion/Insertion tables of finished audits, methods side by
side (one row per audit and method, with 95 % intervals), a chart of the means with their
intervals, the mean Deletion and Insertion curves of every chosen audit and method, and the table
and the curves' points as CSV."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import state, views
from explainer_service.api.client import JobInfo

SUMMARY_KEY = "audit_summaries"


def _summary(client: state.DashboardClient, job: JobInfo) -> dict[str, Any] | None:
    cache: dict[str, dict[str, Any]] = st.session_state.setdefault(SUMMARY_KEY, {})
    if job.id not in cache:
        page = state.attempt(f"reading audit {job.id[:12]}", client.audit_result, job.id, page_size=1)
        if page is None or page.summary is None:
            return None
        cache[job.id] = page.summary
    return cache[job.id]


def main() -> None:
    st.title("Evaluation")
    st.caption("Deletion: lower is better; Insertion: higher is better (RISE, Petsiuk et al. 2018). "
               "Means over the pairs with their 95 % intervals, as the paper's Table 1.")
    client = state.client()
    if client is None:
        return
    jobs = state.attempt("listing the finished audits", client.list_jobs, kind="audit", state="done")
    if jobs is None:
        return
    if not jobs:
        st.info("No finished audits yet: submit one on the Audits page.")
        return
    by_id = {j.id: j for j in jobs}
    chosen = st.multiselect(
        "Audits to compare", list(by_id), default=list(by_id)[:5], key="eval.audits",
        format_func=lambda i: f"{i[:12]} · {by_id[i].model} · {', '.join(by_id[i].methods) or 'verification'}")
    audits = [(by_id[i], s) for i in chosen if (s := _summary(client, by_id[i])) is not None]
    table = views.evaluation_table(audits)
    if not table:
        st.info("Choose at least one audit.")
        return
    text_columns = ("audit", "model", "pairs", "accuracy", "method", "deletion", "insertion", "pairs/s")
    st.dataframe([{k: r.get(k) for k in text_columns} for r in table], hide_index=True, key="eval.table")
    chart = views.interval_chart(table)
    if chart is not None:
        st.altair_chart(chart)
    st.download_button("Download table CSV", views.csv_bytes(table), file_name="evaluation.csv", mime="text/csv",
                       key="eval.csv")
    curves = views.evaluation_curve_points(audits)
    curve_chart = views.curve_chart(curves, by_audit=True)
    if curve_chart is not None:
        st.subheader("Deletion and Insertion curves")
        st.caption("Mean curves over each audit's matched pairs: methods by colour and point shape, audits by "
                   "dash. The area under a curve is its AUC in the table.")
        st.altair_chart(curve_chart)
        st.download_button("Download curves CSV", views.csv_bytes(curves), file_name="evaluation-curves.csv",
                           mime="text/csv", key="eval.curves_csv")
    elif audits:
        st.caption("The chosen audits have no Deletion/Insertion curves (no metric asked, or written before "
                   "curves were kept).")


main()
