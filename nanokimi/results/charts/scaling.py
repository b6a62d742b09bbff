"""scale.png: a ladder's loss against training FLOPs with each arm's fitted curve, the compute
multiplier against size, and loss against training time.

Both axes of the loss chart are logarithmic, as scaling-law plots are: each run is a faint point,
each size's mean over seeds a filled one, the fitted L(C) = E + A·C^(−α) a line with its 95% bootstrap
band, solid over the FLOPs the arm measured and dashed beyond (an extrapolation). The multiplier chart
puts each pair's multiplier at each of the baseline's sizes against the baseline's parameters (log
both), with its interval and a rule at 1 (equal compute). Arms keep their registry colours (style.py).
"""

import math

import altair as alt
import pandas as pd

from .style import LEGEND, color_scale

LOG = alt.Scale(type="log", zero=False, nice=False)


def loss_chart(rows, curves, width=420, height=320):
    """Final validation loss against training FLOPs: runs, means per size, fitted curves and bands."""
    runs = rows[pd.to_numeric(rows["final_val_loss"], errors="coerce").notna()].copy()
    runs["final_val_loss"] = runs["final_val_loss"].astype(float)
    arms = list(dict.fromkeys(runs["arm"]))
    color = alt.Color("arm:N", title="arm", scale=color_scale(arms), legend=alt.Legend(**LEGEND))
    x = alt.X("train_flops:Q", title="training FLOPs", scale=LOG, axis=alt.Axis(format="~s"))
    y = alt.Y("final_val_loss:Q", title="final validation loss (nats/char)", scale=LOG)
    base = alt.Chart(runs)
    layers = [base.mark_point(size=25, opacity=0.5).encode(x=x, y=y, color=color,
                                                          tooltip=["arm", "n_embd", "seed", "final_val_loss"]),
              base.mark_point(size=90, filled=True).encode(
                  x=alt.X("mean(train_flops):Q", scale=LOG), y=alt.Y("mean(final_val_loss):Q", scale=LOG),
                  color=color, detail="n_embd:N")]
    if not curves.empty:
        curves = curves.assign(drawn=curves["part"].map(lambda p: "fitted" if p == "measured" else "extrapolated"))
        line = alt.Chart(curves)
        layers = [line.mark_area(opacity=0.15).encode(x=alt.X("train_flops:Q", scale=LOG),
                                                      y=alt.Y("ci_low:Q", scale=LOG), y2="ci_high:Q",
                                                      color=color, detail="part:N"),
                  line.mark_line().encode(
                      x=alt.X("train_flops:Q", scale=LOG), y=alt.Y("loss:Q", scale=LOG),
                      color=color, detail="part:N",
                      strokeDash=alt.StrokeDash("drawn:N", title="curve", scale=alt.Scale(
                          domain=["fitted", "extrapolated"], range=[[1, 0], [5, 4]])))] + layers
    return alt.layer(*layers).properties(width=width, height=height, title="loss against training compute")


def multiplier_chart(found, width=320, height=320):
    """Each pair's compute multiplier at the baseline's sizes against its parameters, with 95% intervals."""
    rows = found[(found["kind"] == "multiplier")].copy()
    rows = rows[[math.isfinite(float(v)) and float(v) > 0 for v in rows["multiplier"]]] if len(rows) else rows
    if rows.empty:
        return alt.Chart(pd.DataFrame({"text": ["no multiplier to draw"]})).mark_text().encode(
            text="text:N").properties(width=width, height=height, title="compute multiplier")
    rows["pair"] = rows["arm"] + " over " + rows["baseline"]
    # an open upper end (the arm did not reach the loss in some draws) is drawn up to the chart's edge
    rows["ci_high"] = [h if math.isfinite(float(h)) else float(m) * 10 for h, m in zip(rows["ci_high"], rows["multiplier"])]
    x = alt.X("params:Q", title="baseline's parameters", scale=alt.Scale(type="log", zero=False, padding=12),
              axis=alt.Axis(format="~s"))
    color = alt.Color("arm:N", title="arm", scale=color_scale(list(dict.fromkeys(rows["arm"]))),
                      legend=alt.Legend(**LEGEND))
    base = alt.Chart(rows)
    return alt.layer(
        alt.Chart(pd.DataFrame({"one": [1.0]})).mark_rule(color="#888888", strokeDash=[4, 4]).encode(y="one:Q"),
        base.mark_rule(clip=True).encode(x=x, y=alt.Y("ci_low:Q", scale=LOG), y2="ci_high:Q", color=color,
                                         detail="pair:N"),
        base.mark_line(point=True, clip=True).encode(
            x=x, y=alt.Y("multiplier:Q", title="compute multiplier (x the baseline's)", scale=LOG), color=color,
            strokeDash=alt.StrokeDash("baseline:N", title="over"), detail="pair:N",
            tooltip=["pair", "n_embd", "multiplier", "ci_low", "ci_high"]),
    ).properties(width=width, height=height, title="compute multiplier against size (below 1: less compute)")


def time_chart(rows, width=420, height=320):
    """Final validation loss against training time (evaluation excluded) for the same runs, log-log: a
    sparse MoE's dispatch costs time its FLOPs do not count, so equal FLOPs and equal time can disagree."""
    runs = rows[pd.to_numeric(rows["final_val_loss"], errors="coerce").notna()].copy()
    runs["final_val_loss"] = runs["final_val_loss"].astype(float)
    color = alt.Color("arm:N", title="arm", scale=color_scale(list(dict.fromkeys(runs["arm"]))),
                      legend=alt.Legend(**LEGEND))
    base = alt.Chart(runs)
    return alt.layer(
        base.mark_point(size=25, opacity=0.5).encode(
            x=alt.X("train_time_s:Q", title="training time (s, evaluation excluded)",
                    scale=alt.Scale(type="log", zero=False, padding=12)),
            y=alt.Y("final_val_loss:Q", title="final validation loss (nats/char)", scale=LOG), color=color,
            tooltip=["arm", "n_embd", "seed", "train_time_s", "final_val_loss"]),
        base.mark_line(point=alt.OverlayMarkDef(size=90, filled=True)).encode(
            x=alt.X("mean(train_time_s):Q", scale=LOG), y=alt.Y("mean(final_val_loss):Q", scale=LOG), color=color,
            order="n_embd:Q"),
    ).properties(width=width, height=height, title="loss against training time, this machine")


def scale_figure(rows, curves, found):
    """scale.png: the loss chart beside the multiplier chart, and under them loss against training time."""
    top = alt.hconcat(loss_chart(rows, curves), multiplier_chart(found)).resolve_scale(
        color="independent", strokeDash="independent")
    return alt.vconcat(top, time_chart(rows)).resolve_scale(color="independent", strokeDash="independent").properties(
        title="nanokimi scale")
