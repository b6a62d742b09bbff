"""Smoothing and thinning of history series, before they are drawn.

Smoothing is TensorBoard's debiased exponential moving average (`ema`), per series, in step units;
it only touches metrics recorded at every step (`EVERY_STEP`): evaluation points (validation loss,
memory, routing) are drawn as they are. `downsample` keeps a long series light enough to redraw
every second.
"""

import math

import numpy as np
import pandas as pd
from scipy import signal

MAX_POINTS = 2000  # per series: enough for a smooth line, few enough to redraw every second


# Metrics recorded at every training step (train.py); every other metric is recorded at evaluations
# only, and a moving average over 11 evaluation points would move the curve the verdict is about.
EVERY_STEP = ("train_loss", "ms_per_step")
DEFAULT_SMOOTHING = 0.6  # TensorBoard's default weight


def downsample(frame, max_points=MAX_POINTS, by=("model", "metric")):
    """At most `max_points` evenly spaced rows per series (always keeping each series' last row)."""
    if frame.empty:
        return frame
    parts = []
    for _, group in frame.groupby(list(by), sort=False):
        if len(group) > max_points:
            # every stride-th row of all but the last, then the last: at most max_points rows
            stride = -(-(len(group) - 1) // (max_points - 1))
            group = pd.concat([group.iloc[:-1:stride], group.iloc[[-1]]])
        parts.append(group)
    return pd.concat(parts)


def ema(steps, values, weight):
    """TensorBoard's debiased exponential moving average, in step units.

    With points one step apart this is TensorBoard's smoothing exactly:
    `last = weight * last + (1 - weight) * value`, shown as `last / (1 - weight ** n)` after n
    points, so the first points are not pulled towards 0. Where points are `gap` steps apart
    (a thinned live series), the decay over the gap is weight ** gap, and the debiasing
    denominator accumulates the same way; a point's weight is then (1 - weight ** gap), the
    steps it stands for. The first point is returned as it is; a non-finite value is passed
    through and leaves the average alone.
    """
    values = np.asarray(values, dtype=float)
    steps = np.asarray(steps)
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    gaps = np.diff(steps)
    if len(values) > 1 and np.isfinite(values).all() and (gaps == gaps[0]).all() and gaps[0] > 0:
        # evenly spaced (every step, the usual case): the same recursion as a linear filter, in C
        decay = weight ** gaps[0]
        last = signal.lfilter([1 - decay], [1, -decay], values)
        return last / (1 - decay ** np.arange(1, len(values) + 1))
    out = values.copy()
    last = norm = 0.0
    previous = None
    for i, (step, value) in enumerate(zip(steps, values)):
        if not math.isfinite(value):
            continue
        decay = weight ** (step - previous if previous is not None else 1)
        last = decay * last + (1 - decay) * value
        norm = decay * norm + (1 - decay)
        out[i] = last / norm if norm > 0 else value
        previous = step
    return out


def smooth(frame, weight, by=("model", "metric")):
    """`value` smoothed by `ema` within each series (in step order), for the EVERY_STEP metrics
    only; weight 0 (or an empty frame): unchanged. The input frame is left alone."""
    if weight <= 0 or frame.empty:
        return frame
    out = frame.reset_index(drop=True)
    values = out["value"].to_numpy(dtype=float).copy()
    for rows in out[out["metric"].isin(EVERY_STEP)].groupby(list(by), sort=False).groups.values():
        order = out.loc[rows, "step"].sort_values(kind="stable").index.to_numpy()
        values[order] = ema(out.loc[order, "step"].to_numpy(), values[order], weight)
    out["value"] = values
    out.index = frame.index
    return out
