"""The facexplain dashboard: Streamlit pages over the gRPC API's typed client.

``app.py`` is the entry (``facexplain dashboard`` runs it); ``pages/`` holds one short script per
page; ``state.py`` holds the client and per-user state; ``views.py`` holds everything that is more
than layout (overlays, legends, tables, CSV, upload checks) as plain functions, tested without
Streamlit. Nothing here imports the workers, the store or the engine: what the dashboard shows,
any API client could get too.
"""
