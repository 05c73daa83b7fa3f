"""SparsePulse dashboard: `streamlit run app.py` (or `make run`). Logic lives in app_ui.py."""
import streamlit as st

import app_ui
from stream.worker import Worker

st.set_page_config(page_title="SparsePulse", layout="wide")
store = app_ui.ro_store(str(app_ui.db_path()))
worker = Worker(app_ui.db_path())
view = app_ui.sidebar(store, worker)

if "autostarted" not in st.session_state:  # first visit: replay the default file if there is one
    st.session_state.autostarted = True
    default = app_ui.default_replay_file()
    models = app_ui.list_models()
    if default and models and not worker.running and store.count_posts() == 0:
        worker.start(["replay", str(default), "--speed", str(app_ui.DEMO_SPEED), "--max-idle", str(app_ui.DEMO_MAX_IDLE_S)], model=str(models[0]))

if store.count_posts() == 0 and not worker.running and app_ui.default_replay_file() is None:
    app_ui.onboarding()
else:
    st.title("SparsePulse")

    @st.fragment(run_every="2s")
    def live():
        app_ui.dashboard(store, worker, view)

    live()
