"""Models page: the models the API serves (ready or not, family, chip, threshold) and the methods."""

from __future__ import annotations

import streamlit as st

from dashboard import state

st.title("Models")
client = state.client()
if client is not None:
    models = state.attempt("listing the models", client.list_models)
    if models is not None:
        if not models:
            st.info("The server has no models.")
        st.dataframe(
            [
                {"model": m.name + (" (default)" if m.is_default else ""), "ready": m.ready,
                 "why not ready": m.not_ready_reason, "family": m.family, "chip": f"{m.chip_kind} {m.chip_size}px",
                 "embedding": m.embedding_dim, "threshold": m.threshold, "description": m.description}
                for m in models
            ],
            hide_index=True,
        )
    methods = state.attempt("listing the methods", client.list_methods)
    if methods is not None:
        st.subheader("Methods")
        st.dataframe(
            [{"method": m.name, "title": m.title, "reference": m.reference, "needs": m.needs,
              "forward passes (defaults)": m.forward_passes, "seeded": m.seeded} for m in methods],
            hide_index=True,
        )
