"""The dashboard's entry script: ``streamlit run dashboard/app.py`` (``facexplain dashboard``).

Sets the page up, names the API in the sidebar and hands over to one of the pages of
``dashboard/pages/`` through ``st.navigation`` (Explain first: it is served at ``/``).
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # `import dashboard` when Streamlit runs this file as a script
    sys.path.insert(0, str(_HERE.parent))

import streamlit as st  # noqa: E402

from dashboard import state  # noqa: E402

PAGES = (
    ("explain.py", "Explain", ":material/compare:"),
    ("audits.py", "Audits", ":material/fact_check:"),
    ("evaluation.py", "Evaluation", ":material/table_chart:"),
    ("models.py", "Models", ":material/memory:"),
)


def main() -> None:
    """Configure the page, then run the chosen one."""
    st.set_page_config(page_title="facexplain", page_icon=":material/face:", layout="wide")
    pages = [
        st.Page(str(_HERE / "pages" / file), title=title, icon=icon, default=(i == 0))
        for i, (file, title, icon) in enumerate(PAGES)
    ]
    nav = st.navigation(pages)
    with st.sidebar:
        st.caption(f"API: `{state.server_address()}`")
        st.caption("Maps: red = similar, blue = dissimilar (a colour-blind-safe diverging scale).")
    nav.run()


main()
