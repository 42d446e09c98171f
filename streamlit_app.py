"""Entry point: the dashboard frame under ``streamlit run``, and the ASGI app (dashboard + /api).

``streamlit run streamlit_app.py`` finds the object named ``app`` (an ``st.App`` serving the
HTTP API next to the dashboard); each script run of the dashboard itself executes the
``st.runtime.exists()`` branch, which draws the navigation frame.
"""

from __future__ import annotations

import streamlit as st

if st.runtime.exists():
    from ui.frame import run_frame

    run_frame()
else:
    from exporter.api import api_routes

    app = st.App(__file__, routes=api_routes())
