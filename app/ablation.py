"""Ablation: arms of architecture × optimizer over several seeds, with the effects' CIs; optionally
each arm at its own tuned learning rate.

The same grids as `python -m nanokimi ablate` (the four controls: `--controls`) and, with "Tune
learning rates", `python -m nanokimi sweep`. Train grid queues it in the run store and the runner
process trains its runs one after the other (nanokimi/running/jobs.py); a sweep's confirmation runs are
added by the runner once its tuning runs have chosen the learning rates. The page shows the grid
named in the URL (`?run=ID`), else the one training now, else the latest, and polls while it is
active. The controls are URL parameters, and a grid opens into them, as on the Compare page.
"""

import math
from fractions import Fraction

import pandas as pd
import streamlit as st

from nanokimi.experiments import ablation, sweep
from nanokimi.experiments.arms import ARCHITECTURES, display_name
from nanokimi.results import ablation_files, report
from nanokimi.results.charts.ablation import arm_band_chart, effects_chart, effects_side_by_side_chart, lr_sweep_chart
from nanokimi.running import jobs, request
from nanokimi.metrics import METRIC_BY_NAME
from nanokimi.training.optim import OPTIMIZER_LABELS, OPTIMIZERS
from nanokimi.status import RUNNING
from app.common.address import Param, check_address, control_params as address_params, flag, one_of, whole_number
from app.common.arms_table import arms_table
from app.common.chart_display import show_chart, x_axis_choice
from app.common.controls import (ANY_STOP, BASELINE, BIND, CONTROLS, KEEP, control_params, model_controls, open_in_url,
                                 run_to_open, settings_of, untaken, url_params)
from app.common.datasets import corpus, dataset_choices, dataset_control, dataset_of
from app.common.effects import (effects_of, effects_table, multiplier_pairs, multiplier_sentence, multiplier_table,
                                summarise)
from app.common.estimate import estimate, estimate_sentence
from app.common.damage import guarded
from app.common.jobqueue import job_queue
from app.common.live import POLL_S, live_area, live_run, run_controls, status_note
from app.common.pickers import run_label
from app.common.plain import plain
from app.common.request import build_request

PREFIX = "ablation_"
FACTOR_CHOICES = (1 / 27, 1 / 9, 1 / 3, 1.0, 3.0, 9.0, 27.0)  # learning-rate factors offered; the CLI's default below
WIDE_LABELS = {"labelLimit": 0}  # arm and effect names are long: show them whole in legends and axes
queue = job_queue()

DEFAULTS = {"architectures": list(ablation.DEFAULT_ARCHITECTURES), "optimizers": ["adamw", "truemuon"],
            "factors": list(sweep.DEFAULT_FACTORS)}  # the 2×2 grid; the CLI's sweep
BOUND = [PREFIX + name for name in ["architectures", "optimizers", "seeds", "dataset", *CONTROLS, "seed", "tune",
                                    "factors", "tuning_seeds"]]  # this page's URL parameters


def open_grid(run_id):
    """Show a stored grid's or sweep's settings in the controls (and the URL): Train grid then trains it again."""
    run = queue.store.get_run(run_id)
    stored = request.Request.from_stored(run["config"]) if run else None
    if stored is None or stored.kind not in request.GRIDS:
        return
    asked, settings, is_sweep = stored.asked, settings_of(stored), stored.kind == request.SWEEP
    factors = [f for f in FACTOR_CHOICES if any(math.isclose(f, g) for g in asked.get("factors", ()))]
    grid = {"architectures": (list(asked["architectures"]), DEFAULTS["architectures"], display_name),
            "optimizers": (list(asked["optimizers"]), DEFAULTS["optimizers"], OPTIMIZER_LABELS.get),
            "seeds": (asked["seeds"], 3, str), "seed": (settings["seed"], BASELINE["seed"], str),
            "tune": (is_sweep, False, str), "factors": (factors if is_sweep else DEFAULTS["factors"], DEFAULTS["factors"],
                                                      factor_label),
            "tuning_seeds": (asked.get("tuning_seeds", 1), 1, str),
            "dataset": (dataset_of(stored, PREFIX + "dataset"), dataset_choices()[0], str)}
    open_in_url(BOUND, {**control_params(PREFIX, settings),
                        **url_params({PREFIX + name: control for name, control in grid.items()})}, PREFIX, settings,
                ADDRESS)


def choose_architectures(architectures):
    st.session_state[PREFIX + "architectures"] = list(architectures)


def factor_label(factor):
    return f"×{Fraction(factor).limit_denominator(100)}"


FIRST_SEED = dict(min_value=0, max_value=2**31 - 100)
SEEDS, TUNING_SEEDS = dict(min_value=1, max_value=5, value=3), dict(min_value=1, max_value=3, value=1)


def seeds_param(label, seeds):
    return Param(label, whole_number(seeds["min_value"], seeds["max_value"]), str(seeds["value"]))


ADDRESS = {  # what each URL parameter accepts (app/common/address.py)
    **address_params(CONTROLS, BASELINE, PREFIX, any_stop=ANY_STOP),
    PREFIX + "architectures": Param("Architectures", one_of(ARCHITECTURES, display_name, several=True),
                                    ", ".join(map(display_name, DEFAULTS["architectures"]))),
    PREFIX + "optimizers": Param("Optimizers", one_of(OPTIMIZERS, OPTIMIZER_LABELS.get, several=True),
                                 ", ".join(map(OPTIMIZER_LABELS.get, DEFAULTS["optimizers"]))),
    PREFIX + "seeds": seeds_param("Seeds", SEEDS),
    PREFIX + "dataset": Param("Dataset", one_of(dataset_choices()), dataset_choices()[0]),
    PREFIX + "seed": Param("First seed", whole_number(**FIRST_SEED), f"{BASELINE['seed']}"),
    PREFIX + "tune": Param("Tune learning rates", flag(), "false"),
    PREFIX + "factors": Param("Learning-rate factors", one_of(FACTOR_CHOICES, factor_label, several=True),
                              ", ".join(map(factor_label, DEFAULTS["factors"]))),
    PREFIX + "tuning_seeds": seeds_param("Tuning seeds", TUNING_SEEDS)}

bad_address = check_address(ADDRESS)
opening = run_to_open(PREFIX, BOUND)
if opening is not None:
    open_grid(opening)

st.title("Ablation")
st.caption("Which change helps: the Mixture-of-Experts, TrueMuon, or both, and does NanoKimi win by its experts or "
           "by its size and activation? Every arm (architecture × optimizer) trains with every seed on the same "
           "batches, and the effects come with 95% confidence intervals from the paired seeds.")
for sentence in bad_address:
    st.warning(sentence)

# --- controls ---------------------------------------------------------------------------------
# the architectures' names are long: their picker has a row of its own; the rows below wrap where the page is
# narrow (an 800-px window) rather than cut the labels short
chosen_architectures = st.multiselect(
    "Architectures", list(ARCHITECTURES), default=DEFAULTS["architectures"], key=PREFIX + "architectures",
    format_func=display_name, **BIND,
    help="NanoGPT and NanoKimi, and the two controls between them: NanoGPT's ReLU MLP and one SwiGLU, each widened "
         "to NanoKimi's parameter count; the Kimi-style sparse MoE, and its two dense SwiGLU controls: one of its "
         "forward FLOPs per token (equal compute), one of its parameters (equal size).")
arms_row = st.container(horizontal=True, vertical_alignment="bottom")
arms_row.button("The four controls", on_click=choose_architectures, args=(ablation.CONTROLS,),
                key=PREFIX + "controls_button", width="content", icon=":material/account_tree:",
                help="NanoGPT, both controls and NanoKimi: NanoKimi − NanoGPT split into parameters, activation "
                     "and routing.")
arms_row.button("Equal compute", on_click=choose_architectures, args=(ablation.equal_compute_architectures(),),
                key=PREFIX + "equal_compute_button", width="content", icon=":material/balance:",
                help="The Kimi-style sparse MoE and its dense controls, as `ablate --equal-compute`: sparsity at "
                     "equal compute, at equal size, and what its unused parameters are worth.")
chosen_optimizers = arms_row.multiselect("Optimizers", OPTIMIZERS, default=DEFAULTS["optimizers"],
                                         key=PREFIX + "optimizers", format_func=OPTIMIZER_LABELS.get, **BIND,
                                         help="Every architecture trains with each of these.")
grid_col, *setting_cols = st.columns(4)
with grid_col:
    seeds = st.slider("Seeds", **SEEDS, key=PREFIX + "seeds", **BIND,
                      help="Runs per arm (with tuning: confirmation seeds). With one seed there is no interval; "
                           "three is the least that says much.")
data = dataset_control(PREFIX + "dataset", grid_col)
values = model_controls(PREFIX, setting_cols)
with setting_cols[2]:
    values["seed"] = st.number_input("First seed", **FIRST_SEED, step=1, value=BASELINE["seed"],
                                     key=PREFIX + "seed", **BIND,
                                     help="Seeds are this, this + 1, …; every arm shares each seed (a paired design).")
tuning_row = st.container(horizontal=True, vertical_alignment="center")
tune = tuning_row.toggle("Tune learning rates", key=PREFIX + "tune", **BIND, width="content",
                         help="First train every arm at several learning rates on tuning seeds (never the seeds the "
                              "effects are measured on), then compare each arm at its best one and at the original's.")
factors = tuning_row.multiselect(
    "Learning-rate factors", FACTOR_CHOICES, default=DEFAULTS["factors"], key=PREFIX + "factors", format_func=factor_label,
    disabled=not tune, **BIND,
    help="Learning rates tried, as factors of each arm's original: AdamW's lr, TrueMuon's / Muon's matrix lr, or "
         "MuonClip's one lr.")
tuning_seeds = tuning_row.slider("Tuning seeds", **TUNING_SEEDS, key=PREFIX + "tuning_seeds", disabled=not tune,
                                 **BIND, help="Runs per arm and learning rate while tuning.", width=180)
for sentence in untaken(PREFIX, values):
    st.warning(sentence)

# --- what those controls ask for --------------------------------------------------------------------
architectures = [a for a in ARCHITECTURES if a in chosen_architectures]  # grid order, whatever the clicking order
optimizers = [o for o in OPTIMIZERS if o in chosen_optimizers]
schedule = request.eval_schedule("quick", values["iters"])
if tune:
    grid, problems = build_request(request.sweep, values, data, seeds, optimizers, architectures=architectures,
                                   factors=sorted(factors), tuning_seeds=tuning_seeds, **schedule)
else:
    grid, problems = build_request(request.ablation, values, data, seeds, optimizers, architectures=architectures,
                                   **schedule)
st.session_state["ablation_request"] = grid  # what Train grid would queue (read by the tests)
for problem in problems:
    st.error(plain(problem))


def grid_estimate(grid):
    """How long the grid (a sweep: both phases) should take here, measured or roughly (estimate.py)."""
    found = estimate(grid)
    if grid.kind != request.SWEEP:
        return estimate_sentence(found, f"for the {len(grid.runs)} runs")
    return estimate_sentence(found, f"for up to {grid.planned_runs()} runs: {len(grid.runs)} tuning, then the "
                                    f"confirmation at the chosen and the original learning rates")


if grid is not None:
    st.caption(grid_estimate(grid))


# --- the grid on show ---------------------------------------------------------------------------
view, info_col = run_controls(queue, request.GRIDS, grid, "Train grid")
if grid is not None:
    threads = grid.runs[0].threads
    if grid.kind == request.SWEEP:
        info_col.caption(f"{len(grid.runs)} tuning runs ({len(grid.arms)} arms × {len(factors)} learning rates × "
                         f"{tuning_seeds} tuning seed(s)), then up to {2 * len(grid.arms) * seeds} confirmation runs "
                         f"({seeds} seed(s) at the chosen and at the original learning rates), one after the other "
                         f"with {threads} torch thread(s).")
    else:
        info_col.caption(f"{len(grid.runs)} runs: {len(grid.arms)} arms × {seeds} seed(s), trained one after the "
                         f"other with {threads} torch thread(s).")
    st.dataframe(arms_table(grid, corpus(*data).vocab_size), hide_index=True, width="stretch", key=PREFIX + "arms_table",
                 column_config={"parameters": st.column_config.NumberColumn(format="localized"),
                                "active parameters": st.column_config.NumberColumn(format="localized"),
                                "vs NanoKimi": st.column_config.NumberColumn(format="%+.1f%%")})
if view is None:
    st.info("No ablation yet: choose settings and press Train grid.")
    st.stop()


def phase_runs(view):
    """The runs whose curves the page draws: a sweep's tuning runs until its confirmation starts."""
    if view.request.kind != request.SWEEP:
        return view.request.runs
    tuning = view.request.tuning
    names = {r.name for r in tuning}
    confirming = [r for r in view.request.runs if r.name not in names]
    started = view.status != RUNNING or view.run["progress"].get("index", 0) >= len(tuning)
    return confirming if confirming and started else tuning


def live_view(run_id, was_active):
    """Progress over the whole grid, redrawn from the store (every POLL_S while it trains)."""
    view = live_run(queue, run_id, was_active)
    is_sweep = view.request.kind == request.SWEEP
    fraction, text = view.progress()
    total, done = view.request.planned_runs(), len(view.results)
    up_to = "up to " if total > len(view.models) else ""  # a sweep before tuning has chosen
    st.markdown(f"**{plain(run_label(view.run))}**")
    st.progress(fraction, text=plain(f"{done} of {up_to}{total} runs done · {text}"))
    if view.status == RUNNING:
        index = view.run["progress"].get("index", 0)
        now = view.request.runs[index]
        arm = plain(report.arm_name(now.arm))  # the stored run's: data
        if is_sweep:
            phase = "Tuning" if index < len(view.request.tuning) else "Confirming"
            st.caption(f"{phase}: arm **{arm}** at {sweep.tuned_setting(now)} **{sweep.learning_rate(now):.3g}**, "
                       f"seed **{now.seed}** (run {index + 1} of {up_to}{total}).")
        else:
            st.caption(f"Training arm **{arm}**, seed **{now.seed}** (run {index + 1} of {total}).")
    if view.run["stop_requested"] and view.active:
        st.caption("Stopping…")
    if is_sweep:
        names = {r.name for r in view.request.tuning}
        tuned = [r for r in jobs.ablation_results(view.run) if r.config.name in names]
        if tuned:
            show_chart(lr_sweep_chart(pd.DataFrame(sweep.sweep_rows(tuned))).configure_legend(**WIDE_LABELS),
                       f"sweep-run{view.id}", PREFIX + "lr_chart")
    history = jobs.ablation_history(view.run, view.history, phase_runs(view), by_learning_rate=is_sweep)
    if (history["metric"] == "val_loss").any():
        x = x_axis_choice(st, PREFIX + "x", charts="the bands (training time: mean over seeds)", width=260)
        show_chart(arm_band_chart(history, x=x).configure_legend(**WIDE_LABELS), f"val-loss-per-arm-run{view.id}",
                   PREFIX + "band_chart")


live_area()
st.fragment(guarded(live_view), run_every=POLL_S if view.active else None)(view.id, view.active)

# --- results ------------------------------------------------------------------------------------
NUMBER = st.column_config.NumberColumn


def effects_block(frame, metric, key):
    """The effects on `metric`: their intervals, their table, and a sentence each."""
    if effects_of(frame, metric).empty:
        st.caption("No effect to estimate: these arms share no contrast.")
        return
    rows = len(effects_of(frame, metric))
    show_chart(effects_chart(frame, metric).properties(height=100 + 32 * rows).configure_axisY(
        **WIDE_LABELS), f"effects-{metric}-run{view.id}", f"{key}_chart")
    st.dataframe(effects_table(frame, metric), hide_index=True, width="stretch", key=f"{key}_table")
    for sentence in effects_of(frame, metric)["sentence"]:
        st.markdown(f"- {sentence}")


def per_arm(rows, summary, frame, name):
    """The per-arm table, time to target and the CSV downloads of some finished runs of a grid."""
    st.dataframe(report.arm_table(summary), hide_index=True, width="stretch", key=f"{PREFIX}{name}_summary_table")
    st.caption("Mean over seeds ± half the width of its 95% confidence interval (none with one seed).")
    st.caption(f"Time to target: training seconds until validation loss first reached {rows[0]['target_val_loss']:.4f} "
               f"(the worst arm's mean final validation loss), over the seeds that reached it.")
    downloads = st.container(horizontal=True)
    downloads.download_button("Download ablation CSV", ablation_files.runs_csv(rows), file_name=f"{name}-run{view.id}.csv",
                              mime="text/csv", icon=":material/download:", key=f"{PREFIX}{name}_runs_csv")
    downloads.download_button("Download summary CSV", ablation_files.summary_csv(summary),
                              file_name=f"{name}_summary-run{view.id}.csv", mime="text/csv",
                              icon=":material/download:", key=f"{PREFIX}{name}_summary_csv")


def multipliers_block(results, key, heading=st.subheader):
    """The compute multipliers of some finished runs of a grid: a table of pairs and a sentence each."""
    pairs = multiplier_pairs(results)
    if not pairs:
        return
    heading("Compute multipliers")
    st.caption("What an arm needs of the other's training FLOPs (and, separately, of its training time here) to "
               "first reach the other's final validation loss: geometric mean over seeds with its 95% CI. Below 1×, "
               "it gets there on less; \"not reached\": not within its run, whose whole cost is the bound after \">\".")
    st.dataframe(multiplier_table(pairs), hide_index=True, width="stretch", key=f"{key}_multipliers_table")
    for (arm, against), axes in pairs.items():
        st.markdown(f"- {multiplier_sentence(arm, against, axes)}")


def metric_choice():
    return st.radio("Effects on", ["best_val_loss", "final_val_loss"], horizontal=True, key=PREFIX + "metric", **KEEP,
                    format_func=lambda m: METRIC_BY_NAME[m].label.lower())


def grid_results(results):
    rows, summary, frame = summarise(results)
    st.subheader("Effects")
    effects_block(frame, metric_choice(), PREFIX + "effects")
    multipliers_block(results, PREFIX + "ablation")
    st.subheader("Per arm")
    per_arm(rows, summary, frame, "ablation")


def sweep_results(results):
    stored = view.request
    names = {r.name for r in stored.tuning}
    tuned = [r for r in results if r.config.name in names]
    st.subheader("Learning rates")
    if not tuned:
        st.caption("No tuning run trained to the end: no learning rate to choose.")
        return
    chosen = sweep.choose(tuned)
    _, original_runs = stored.confirmation({})
    original_lr = {run.arm: sweep.learning_rate(run) for run in original_runs}
    st.dataframe(pd.DataFrame([{
        "arm": report.arm_name(arm), "tuned": c["tuned"], "original": original_lr[arm], "chosen": c["lr"],
        "× original": c["lr"] / original_lr[arm], "final val loss": c["loss"],
        "tried": ", ".join(f"{lr:.3g}" for lr in c["tried"]), "at the edge": c["at_edge"]} for arm, c in chosen.items()]),
        hide_index=True, width="stretch", key=PREFIX + "chosen_table",
        column_config={"original": NUMBER(format="%.3g"), "chosen": NUMBER(format="%.3g"),
                       "× original": NUMBER(format="%.3g"), "final val loss": NUMBER(
                           format="%.4f", help="Mean over the tuning seeds at the chosen learning rate.")})
    st.caption("Each arm's learning rate with the lowest mean final validation loss on the tuning seeds (a run "
               "that diverged counts as the worst).")
    edges = [f"{report.arm_name(arm)} ({c['tuned']} {c['lr']:.3g}, the "
             f"{'lowest' if c['lr'] == c['tried'][0] else 'highest'} tried)" for arm, c in chosen.items() if c["at_edge"]]
    if edges:
        st.warning(f"At the edge of the learning rates tried, so the best may lie beyond: {plain('; '.join(edges))}. "
                   f"Widen the learning-rate factors and tune again.", icon=":material/warning:")
    sweep_csv = pd.DataFrame(sweep.sweep_rows(tuned))
    st.download_button("Download sweep CSV", sweep_csv.to_csv(index=False), file_name=f"sweep-run{view.id}.csv",
                       mime="text/csv", icon=":material/download:", key=PREFIX + "sweep_csv")
    if not stored.chosen:
        return
    at_chosen, at_original = stored.confirmation()
    by_name = {r.config.name: r for r in results}
    phases = {"tuned": [by_name[r.name] for r in at_chosen if r.name in by_name],
              "original": [by_name[r.name] for r in at_original if r.name in by_name]}
    if not any(phases.values()):
        return
    st.subheader("Effects at the tuned and at the original learning rates")
    metric = metric_choice()
    summaries = {name: summarise(phase) for name, phase in phases.items() if phase}
    both = pd.concat([frame.assign(**{"learning rates": name}) for name, (_, _, frame) in summaries.items()])
    if effects_of(both, metric).empty:
        st.caption("No effect to estimate: these arms share no contrast.")
    else:
        show_chart(effects_side_by_side_chart(both, metric), f"effects-{metric}-by-lr-run{view.id}",
                   PREFIX + "sweep_effects_chart")
        side_by_side = pd.DataFrame({"effect": list(dict.fromkeys(effects_of(both, metric)["name"]))})
        for name, (_, _, frame) in summaries.items():
            effects = effects_table(frame, metric).rename(columns=lambda c: c if c == "effect" else f"{c} · {name}")
            side_by_side = side_by_side.merge(effects, on="effect", how="left")
        st.dataframe(side_by_side.fillna(report.NO_VALUE), hide_index=True, width="stretch",
                     key=PREFIX + "sweep_effects_table")
        for column, (name, (_, _, frame)) in zip(st.columns(len(summaries)), summaries.items()):
            with column:
                st.markdown(f"**At the {name} learning rates**")
                for sentence in effects_of(frame, metric)["sentence"]:
                    st.markdown(f"- {sentence}")
    st.subheader("Per arm")
    for tab, (name, summarised) in zip(st.tabs([f"At the {name} learning rates" for name in summaries]),
                                       summaries.items()):
        with tab:
            per_arm(*summarised, name)
            multipliers_block(phases[name], f"{PREFIX}{name}", heading=lambda text: st.markdown(f"**{text}**"))


if not view.active:
    status_note(view, "Sweep" if view.request.kind == request.SWEEP else "Grid")
    results = jobs.ablation_results(view.run, view.history)
    if results and view.request.kind == request.SWEEP:
        sweep_results(results)
    elif results:
        grid_results(results)
