"""Runs: every comparison, ablation grid and sweep made on this machine, as a table to sort and filter.

One row per run and model/arm (nanokimi/runtable.py): kind, dataset, status, progress, steps done,
duration, best validation loss (mean ± 95% CI over an arm's seeds) and every setting. Pick runs to
overlay any metric, grouped by any setting with the seeds of a group as a mean and a 95% confidence
band (charts/runs.py: model colours, dashes and shades; the band within the members' range; smoothing
as on Compare); open one (a comparison on the Compare page, a grid on the Ablation page), download their
results, or delete them (with their history and checkpoints). Active runs refresh while they train.
"""

import pandas as pd
import streamlit as st

from nanokimi.results import report, runtable
from nanokimi.results.charts.runs import band_note, group_band_chart
from nanokimi.results.charts.smoothing import DEFAULT_SMOOTHING, EVERY_STEP
from nanokimi.running.jobs import history_frame
from nanokimi.running.request import COMPARISON, GRIDS, Request
from nanokimi.settings import all_fields
from nanokimi.status import ACTIVE, ALL
from nanokimi.training.train import RunConfig
from app.common.chart_display import show_chart
from app.common.controls import KEEP
from app.common.damage import guarded
from app.common.jobqueue import job_queue
from app.common.live import POLL_S
from app.common.pickers import run_label

queue = job_queue()
LIVE_S = 2 * POLL_S  # the table and chart re-read active runs this often
# Shown unless the "Columns" control adds more; every column of runtable.TABLE_COLUMNS can be shown.
DEFAULT_COLUMNS = ["run", "model", "status", "progress", "steps", "best_val_loss", "best_val_loss_ci", "n_embd",
                   "n_layer", "iters", "lr", "matrix_lr", "seeds"]
HELP = {f.name: f.metadata["help"] for f, _ in all_fields(RunConfig)}
WIDTHS = {"run": 45, "kind": 80, "model": 130, "status": 75, "dataset": 110, "progress": 65, "steps": 50, "seeds": 45,
          "duration_s": 70, "train_time_s": 70, "best_val_loss": 80, "best_val_loss_ci": 70, "created": 120,
          "architecture": 90, "optimizer": 70, "seed": 80, "message": 200}
COLUMN_CONFIG = {
    "run": st.column_config.NumberColumn("run", format="#%d"),
    "model": st.column_config.TextColumn("model/arm", help="A comparison's model, a grid's arm (its seeds summarised)."),
    "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent",
                                                help="Steps trained of all the steps this row will train."),
    "steps": st.column_config.NumberColumn("steps", format="localized",
                                           help="Steps really trained, summed over the row's seeds."),
    "duration_s": st.column_config.NumberColumn("duration (s)", format="%.1f",
                                                help="Wall time of the whole run, from start to end (or now)."),
    "train_time_s": st.column_config.NumberColumn("train time (s)", format="%.1f",
                                                  help="Training time per seed, evaluation excluded (mean)."),
    "best_val_loss": st.column_config.NumberColumn("best val loss", format="%.4f",
                                                   help="Mean over the seeds that trained to the end; live while training."),
    "best_val_loss_ci": st.column_config.TextColumn("± 95% CI", help="Half-width of the t-interval over the seeds "
                                                                     "(two or more; \"–\": one seed, no interval)."),
    "created": st.column_config.DatetimeColumn("created (UTC)", format="YYYY-MM-DD HH:mm"),
    **{name: st.column_config.Column(name, help=HELP[name]) for name in runtable.SETTINGS if name != "seed"},
}
for name, config in COLUMN_CONFIG.items():  # widths fitted to the page; every other column stays at its default
    config["width"] = WIDTHS.get(name, 50)
COLUMN_CONFIG.update({name: st.column_config.Column(width=width) for name, width in WIDTHS.items()
                      if name not in COLUMN_CONFIG})

def known(key, options):
    """Forget remembered choices of the multiselect `key` that are no longer among its options (a
    deleted run's, a dataset no run uses any more); returns the options."""
    if key in st.session_state:
        st.session_state[key] = [v for v in st.session_state[key] if v in options]
    return options


st.title("Runs")
runs = queue.store.list_runs()
if not runs:
    st.info("No runs yet: press Train on the Compare page.")
    st.stop()

filters = st.container(horizontal=True, vertical_alignment="bottom")  # wraps on a narrow page
needle = filters.text_input("Filter", key="runs_filter", **KEEP, placeholder="model, arm, optimizer, message, #id…")
kinds = filters.multiselect("Kind", (COMPARISON,) + GRIDS, key="runs_kind", **KEEP, width=190)
statuses = filters.multiselect("Status", ALL, key="runs_status", **KEEP, width=190)
dataset_names = sorted({Request.from_stored(r["config"]).data_label for r in runs})
datasets = filters.multiselect("Dataset", known("runs_dataset", dataset_names), key="runs_dataset", **KEEP, width=190)
with filters.popover("Columns", icon=":material/view_column:", width="content"):
    columns = st.multiselect("Columns", list(runtable.TABLE_COLUMNS), default=DEFAULT_COLUMNS, key="runs_columns",
                             **KEEP, help="Columns shown in the table; click a header to sort.")


def filtered(table):
    """The table's rows that pass the filters above it."""
    keep = pd.Series(True, index=table.index)
    if kinds:
        keep &= table["kind"].isin(kinds)
    if statuses:
        keep &= table["status"].isin(statuses)
    if datasets:
        keep &= table["dataset"].isin(datasets)
    if needle:
        text = ("#" + table["run"].astype(str) + " " + table["kind"] + " " + table["model"] + " " + table["status"]
                + " " + table["dataset"] + " " + table["optimizer"] + " " + table["message"])
        keep &= text.str.lower().str.contains(needle.lower(), regex=False)
    return table[keep]


@st.cache_data(max_entries=10_000, show_spinner=False)
def finished_summaries(home, run_id):
    """Store.model_summaries of a finished run: its history no longer changes, so it is read once."""
    return queue.store.model_summaries([run_id])


def summaries(stored):
    """model_summaries of the runs: a finished run's from the cache, an active run's read again."""
    active = [r["id"] for r in stored if r["status"] in ACTIVE]
    cached = [row for r in stored if r["status"] not in ACTIVE for row in finished_summaries(str(queue.home), r["id"])]
    return cached + queue.store.model_summaries(active)


def run_table():
    """The table, re-read from the store (a fragment: it refreshes while a run is active)."""
    stored = queue.store.list_runs()
    table = runtable.run_table(stored, summaries(stored))
    shown = filtered(table)
    shown = shown.assign(best_val_loss_ci=shown["best_val_loss_ci"].map(lambda v: "–" if pd.isna(v) else f"± {v:.4f}"),
                         architecture=shown["architecture"].map(report.architecture_name),
                         optimizer=shown["optimizer"].map(report.optimizer_name))
    st.dataframe(shown, hide_index=True, width="stretch", key="runs_table", column_config=COLUMN_CONFIG,
                 column_order=[c for c in columns if c in shown.columns] or None)
    training = sum(r["status"] in ACTIVE for r in stored)
    if any_active and not training:
        st.rerun(scope="app")  # the last active run has ended: redraw the page once, without refreshing
    st.caption(f"{shown['run'].nunique()} of {len(stored)} runs shown, {len(shown)} rows (one per model/arm)"
               + (f"; {training} active, refreshed every {LIVE_S:g} s." if training else "."))


any_active = any(r["status"] in ACTIVE for r in runs)
st.fragment(guarded(run_table), run_every=LIVE_S if any_active else None)()

by_id = {r["id"]: r for r in runs}
selected = st.multiselect("Runs", known("runs_selected", list(by_id)), key="runs_selected", **KEEP,
                          format_func=lambda i: run_label(by_id[i]),
                          help="Pick runs to overlay their curves, open, download or delete.")
if not selected:
    st.stop()

chosen = [by_id[i] for i in selected]
# One row that wraps where the page is narrow (an 800-px window): every control keeps its label.
chart_controls = st.container(horizontal=True, vertical_alignment="bottom")
group_by = chart_controls.multiselect(
    "Group by", runtable.GROUP_KEYS, default=["run", "model"], key="runs_group_by", **KEEP,
    help="Runs with equal values of these columns form a group; its members (e.g. seeds) are drawn as a mean with "
         "a 95% confidence band, kept within the members' range. Colour: the model; dash: its optimizer, or the "
         "next setting; shades: what is left (e.g. a sweep's learning rates).")
metric = chart_controls.selectbox("Metric", list(runtable.METRICS), key="runs_metric", **KEEP,
                                  format_func=lambda m: runtable.METRICS[m], width=230)
x_axis = chart_controls.selectbox("x axis", list(runtable.X_AXES), key="runs_x", **KEEP, format_func=runtable.X_AXES.get,
                                  help="Fraction of run puts a 10-step and a 1,000-step run on one axis.", width=200)
smoothing = chart_controls.slider(
    "Smoothing", 0.0, 0.99, DEFAULT_SMOOTHING, step=0.01, key="runs_smoothing", **KEEP, width=170,
    disabled=metric not in EVERY_STEP,
    help="As on the Compare page: TensorBoard's exponential moving average of the train loss and step time, in "
         "steps (0 = off; the raw mean drawn faintly behind). Metrics measured at evaluations are drawn as they are.")
log_x = chart_controls.toggle("log x", key="runs_log_x", **KEEP, width="content")
log_y = chart_controls.toggle("log y", key="runs_log_y", **KEEP, width="content")


def overlay():
    """The grouped chart and the group table of the chosen runs (a fragment, live while one trains)."""
    current = [queue.store.get_run(i) for i in selected]
    current = [r for r in current if r is not None]
    member_table = runtable.member_frame(current)
    history = history_frame(queue.store.history(selected, runtable.metric_names(metric, member_table.to_dict("records"))))
    stats = runtable.group_stats(history, member_table, group_by, metric, x_axis)
    if stats.empty:
        st.info(f"No {runtable.METRICS[metric].split(' (')[0]} recorded yet for these runs.")
    else:
        show_chart(group_band_chart(stats, runtable.METRICS[metric], runtable.X_AXES[x_axis], log_x, log_y,
                                    by=group_by, metric=metric, smoothing=smoothing, x=x_axis), f"runs-{metric}",
                   "runs_overlay")
        if band_note(stats):
            st.caption(band_note(stats))
    groups = runtable.group_summary(member_table, group_by, runtable.member_bests(current, summaries(current)))
    st.table(groups.assign(
        best_val_loss=groups["best_val_loss"].map(lambda v: "–" if pd.isna(v) else f"{v:.4f}"),
        ci=[("no interval" if pd.isna(low) else f"[{low:.4f}, {high:.4f}]")
            for low, high in zip(groups["ci_low"], groups["ci_high"])],
    ).drop(columns=["ci_low", "ci_high"]).rename(columns={"best_val_loss": "best val loss (mean)",
                                                         "ci": "95% CI", "measured": "measured seeds"}),
             hide_index=True)


st.fragment(guarded(overlay), run_every=LIVE_S if any(r["status"] in ACTIVE for r in chosen) else None)()


def delete(run_ids):
    """Delete the runs, then clear the selection and the confirmation (a callback: it runs before the
    page is drawn again, when the widgets' values may still be changed)."""
    queue.delete(run_ids)
    st.session_state["runs_selected"] = []
    st.session_state["runs_confirm"] = False


actions = st.container(horizontal=True, vertical_alignment="top")  # wraps on a narrow page
first = chosen[0]
first_kind = Request.from_stored(first["config"]).kind
target = "app/ablation.py" if first_kind in GRIDS else "app/compare.py"
if actions.button("Open", icon=":material/open_in_new:",
                   help=f"Show run #{first['id']} (the first selected) on the "
                        f"{'Ablation' if first_kind in GRIDS else 'Compare'} page."):
    st.switch_page(target, query_params={"run": str(first["id"])})
actions.download_button("Download results CSV", report.runs_results_csv(chosen), file_name="results-runs.csv",
                             mime="text/csv", icon=":material/download:")
active = [r["id"] for r in chosen if r["status"] in ACTIVE]
with actions.container(width="stretch"):
    confirm = st.checkbox(f"Yes, delete {len(selected)} run(s) with their history and checkpoints", key="runs_confirm")
    st.button("Delete", disabled=not confirm, icon=":material/delete:", on_click=delete, args=(selected,))
    if active:
        st.caption(f"Runs {', '.join(f'#{i}' for i in active)} are active: stop them first; they won't be deleted.")
