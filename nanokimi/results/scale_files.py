"""The files a ladder writes: scale.csv (one row per run), scale_fits.csv (the fits, the losses they
give at each budget, the multipliers and the crossings), scale.png, and the summary as terminal text.

The runs' rows are experiments/scaling.py's (`scale_rows`), the fits experiments/fits.py's; this file
fits each arm on its rows and lays the answers out. scale_fits.csv is one table whose `kind` says
what a row is (FIT_COLUMNS; a column a kind has no use for is empty):

- `fit`, one per arm: E, A and alpha of L(C) = E + A · C^(−alpha) with their 95% bootstrap intervals
  (`_low`, `_high`), the `sizes` and `runs` fitted, and `note` ("not enough sizes to fit" below 3);
- `loss`, one per arm and measured size: the fitted loss at the size's mean training FLOPs, its interval;
- `multiplier`, one per pair and baseline size: `multiplier` = how many times the baseline's compute
  the arm needs to reach the baseline's mean loss at that size (below 1: the arm is more efficient),
  with its interval; `n_embd`, `params` (the baseline's) and `train_flops` (the baseline's) say where;
  `extrapolated` when the compute the arm needs lies beyond the FLOPs it measured (its curve extrapolated);
- `multiplier_curve`: the same along both fitted curves, at computes log-spaced from a quarter of the
  baseline's smallest to 4x its largest; `extrapolated` where either curve is read beyond its arm's FLOPs;
- `crossing`: where two arms' fitted curves cross (`train_flops`, `loss`), `extrapolated` when outside
  the FLOPs both measured.

It loads pandas and altair: the CLI imports it when it writes, not at start-up.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .charts.images import save_png
from .charts.scaling import scale_figure
from ..experiments.fits import DRAWS, crossings, curve_multipliers, fit_arm, measured_multipliers
from ..experiments.scaling import SCALE_COLUMNS, scale_rows
from ..status import TRAINED_TO_THE_END

FIT_COLUMNS = ["kind", "arm", "baseline", "sizes", "runs", "E", "E_low", "E_high", "A", "A_low", "A_high", "alpha",
               "alpha_low", "alpha_high", "n_embd", "params", "train_flops", "loss", "multiplier", "ci_low", "ci_high",
               "extrapolated", "note"]


def ladder_fits(rows, draws=DRAWS):
    """{arm: fits.ArmFit} of scale.csv's rows: each arm's runs trained to the end, by n_embd, in seed order."""
    points = {}
    for row in sorted(rows, key=lambda r: r["seed"]):
        if row["status"] in TRAINED_TO_THE_END and row["train_flops"] and row["final_val_loss"] is not None:
            points.setdefault(row["arm"], {}).setdefault(row["n_embd"], []).append(
                (float(row["train_flops"]), float(row["final_val_loss"])))
    arms = list(dict.fromkeys(row["arm"] for row in rows))
    return {arm: fit_arm(arm, points.get(arm, {}), draws) for arm in arms}


def fit_rows(rows, fits, pairs):
    """scale_fits.csv's rows (module docstring) for `fits` ({arm: ArmFit}) and `pairs` ([(arm, baseline)] keys)."""
    params = {(r["arm"], r["n_embd"]): r["params"] for r in rows}
    out = []
    for arm, found in fits.items():
        row = {"kind": "fit", "arm": arm, "sizes": len(found.points), "runs": found.runs, "note": found.note}
        for name in ("E", "A", "alpha"):
            row[name], row[f"{name}_low"], row[f"{name}_high"] = found.parameter(name)
        out.append(row)
    for arm, found in fits.items():
        for size, (flops, _) in sorted(found.means().items()):
            loss, low, high = found.loss_at(flops)
            out.append({"kind": "loss", "arm": arm, "n_embd": size, "params": params.get((arm, size)),
                        "train_flops": flops, "loss": loss, "ci_low": low, "ci_high": high, "extrapolated": False})
    for arm, baseline in pairs:
        if arm not in fits or baseline not in fits:
            continue
        a, b = fits[arm], fits[baseline]
        for kind, found in (("multiplier", measured_multipliers(a, b)), ("multiplier_curve", curve_multipliers(a, b))):
            out.extend({"kind": kind, "arm": arm, "baseline": baseline, "n_embd": m.size,
                        "params": params.get((baseline, m.size)), "train_flops": m.flops, "multiplier": m.value,
                        "ci_low": m.ci_low, "ci_high": m.ci_high, "extrapolated": m.extrapolated,
                        "note": "" if math.isfinite(m.value) else "not reached"} for m in found)
        out.extend({"kind": "crossing", "arm": arm, "baseline": baseline, "train_flops": c.flops, "loss": c.loss,
                    "extrapolated": c.extrapolated,
                    "note": "an extrapolation: outside the FLOPs both arms measured" if c.extrapolated else ""}
                   for c in crossings(a, b))
        if a.fit is None or b.fit is None:
            out.append({"kind": "crossing", "arm": arm, "baseline": baseline,
                        "note": f"no fitted curve for {arm if a.fit is None else baseline}"})
    return out


def curve_frame(fits, count=60, beyond=2.0):
    """Each fitted arm's curve for scale.png: its loss and 95% band at `count` computes from its smallest
    measured / `beyond` to its largest × `beyond`, `part` "measured" inside its FLOPs, "extrapolated" beyond."""
    rows = []
    for arm, found in fits.items():
        if found.fit is None:
            continue
        low, high = found.flops_range
        laws = found.laws()
        for flops in np.geomspace(low / beyond, high * beyond, count):
            band = np.percentile([float(law.loss(flops)) for law in laws], [2.5, 97.5]) if laws else (math.nan,) * 2
            part = "measured" if low * (1 - 1e-9) <= flops <= high * (1 + 1e-9) else "extrapolated"
            rows.append({"arm": arm, "train_flops": float(flops), "loss": float(found.fit.loss(flops)),
                         "ci_low": float(band[0]), "ci_high": float(band[1]),
                         "part": part if part == "measured" else ("below" if flops < low else "above")})
    return pd.DataFrame(rows)


def write_files(out_dir, results, pairs, draws=DRAWS):
    """scale.csv, scale_fits.csv and scale.png in `out_dir`; returns (run rows, {arm: ArmFit}, fit rows)."""
    out_dir = Path(out_dir)
    rows = scale_rows(results)
    fits = ladder_fits(rows, draws)
    found = fit_rows(rows, fits, pairs)
    pd.DataFrame(rows, columns=SCALE_COLUMNS).to_csv(out_dir / "scale.csv", index=False)
    pd.DataFrame(found, columns=FIT_COLUMNS).to_csv(out_dir / "scale_fits.csv", index=False)
    save_png(scale_figure(pd.DataFrame(rows, columns=SCALE_COLUMNS), curve_frame(fits),
                          pd.DataFrame(found, columns=FIT_COLUMNS)), out_dir / "scale.png")
    return rows, fits, found


def summary_text(fits, found):
    """The fitted exponents, then each multiplier at each measured size and each crossing, as lines."""
    lines = ["fitted L(C) = E + A·C^-alpha, final validation loss against training FLOPs (95% bootstrap over seeds):"]
    for arm, fit in fits.items():
        if fit.fit is None:
            lines.append(f"  {arm:<24} {fit.note} ({len(fit.points)} sizes, {fit.runs} runs)")
            continue
        (alpha, a_low, a_high), (E, e_low, e_high) = fit.parameter("alpha"), fit.parameter("E")
        lines.append(f"  {arm:<24} alpha = {alpha:.3f} [{a_low:.3f}, {a_high:.3f}]   E = {E:.3f} [{e_low:.3f}, "
                     f"{e_high:.3f}]   A = {fit.fit.A:.4g}   ({len(fit.points)} sizes, {fit.runs} runs)"
                     + (f"; {fit.note}" if fit.note else ""))
    multipliers = [r for r in found if r["kind"] == "multiplier"]
    if multipliers:
        lines.append("\ncompute multiplier: how many times the baseline's compute the arm needs for the baseline's "
                     "loss at each size (below 1: the arm is more compute-efficient):")
    for r in multipliers:
        value = (f"{r['multiplier']:.3g}x [95% CI {r['ci_low']:.3g}, {r['ci_high']:.3g}]"
                 if math.isfinite(r["multiplier"]) else "not reached")
        where = f"n_embd {r['n_embd']} ({r['params']:,} params)" if r["params"] else f"n_embd {r['n_embd']}"
        lines.append(f"  {r['arm']} over {r['baseline']} at {where}: {value}"
                     + ("  (extrapolated: beyond the FLOPs the arm measured)" if r["extrapolated"] else ""))
    for r in (r for r in found if r["kind"] == "crossing"):
        if r.get("train_flops") is None:
            lines.append(f"  {r['arm']} and {r['baseline']}: no crossing to tell ({r['note']})")
        else:
            lines.append(f"  {r['arm']} and {r['baseline']}: the fitted curves cross at {r['train_flops']:.3g} FLOPs "
                         f"(loss {r['loss']:.3f})" + (f", {r['note']}" if r["extrapolated"] else ", inside the measured range"))
    return "\n".join(lines)
