"""SparsePulse dashboard: `streamlit run app.py` (or `make run`). Logic lives in app_ui.py (Streamlit) and stream/charts.py (data shaping)."""
import streamlit as st

import app_ui as ui
from stream.worker import Worker

st.set_page_config(page_title="SparsePulse", layout="wide")
store = ui.ro_store(ui.db_location())
worker = Worker(ui.db_location())
view = ui.sidebar(store, worker)

if "autostarted" not in st.session_state:  # first visit: replay the default file if there is one
    st.session_state.autostarted = True
    default = ui.default_replay_file()
    models = ui.list_models()
    if default and models and not worker.running and store.count_posts() == 0:
        worker.start(ui.demo_replay_args(default), model=str(models[0]))

if store.count_posts() == 0 and not worker.running and ui.default_replay_file() is None:
    ui.onboarding()
else:
    st.title("SparsePulse")

    @st.fragment(run_every="2s")
    def live():
        ui.dashboard(store, worker, view)

    live()
