"""Loss against training compute, fitted per arm, and what the fits say about two arms: numpy and scipy only.

- **The law.** L(C) = E + A · C^(−α): final validation loss against training FLOPs, a saturating
  power law (Kaplan et al. 2020; Hoffmann et al. 2022's form in one variable). E is the loss no
  compute gets below, α how fast the rest falls. Fitted by least squares on every run (each seed a
  point) with `scipy.optimize.curve_fit`, in log-compute about the points' geometric mean (C / C0),
  so A and α do not trade off across twelve orders of magnitude; E is bounded to [0, the lowest loss)
  and α to (0, 5]; several starting values of E, the best fit kept. Three parameters need at least
  MIN_SIZES = 3 sizes: with fewer, an arm says "not enough sizes to fit" and has no curve.
- **Intervals: the bootstrap over seeds.** Each draw resamples, at every size, that size's seeds with
  replacement, and refits; every arm draws the same seeds (one generator seed), so two arms' draws stay
  paired by seed, as their batches are; the 2.5 and 97.5 percentiles of the draws bound E, A, α, the loss at any
  budget and everything derived from them. With 2 seeds a size the intervals are rough (each size has
  3 distinct resamples); they say how far the seeds alone move the answer, not model error.
- **The compute multiplier of arm A over arm B**: how many times B's compute A needs for the same
  loss, compute.py's definition carried to a ladder. At each of B's measured sizes: A's fitted
  compute to reach B's mean loss there, over B's mean FLOPs there; along the fitted curves: A's
  compute to reach L_B(C), over C. Below 1, A is the more compute-efficient. Where A's curve never
  gets to the loss (it lies below E_A), A does not reach it: +inf, which an interval shows as an open end.
- **Crossings.** Where the two fitted curves cross, the compute at which they do, flagged as an
  extrapolation when it lies outside the FLOPs both arms measured.
"""

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

MIN_SIZES = 3
NOT_ENOUGH = "not enough sizes to fit"
AT_BOUND = "E at its bound 0: the sizes do not show where the loss levels off"
LEVEL = 0.95
DRAWS = 400


@dataclass(frozen=True)
class PowerLaw:
    """L(C) = E + A · C^(−alpha)."""
    E: float
    A: float
    alpha: float

    def loss(self, flops):
        return self.E + self.A * np.asarray(flops, dtype=float) ** -self.alpha

    def flops_for(self, loss):
        """The compute at which the curve reaches `loss`: +inf at or below E (never)."""
        loss = np.asarray(loss, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            above = np.clip(loss - self.E, 0, None)
            return np.where(above > 0, (above / self.A) ** (-1 / self.alpha), np.inf)


def fit_power_law(flops, losses):
    """The PowerLaw fitted to points (flops, loss), module docstring; None with fewer than MIN_SIZES
    distinct flops or when no start converges."""
    from scipy.optimize import curve_fit

    flops, losses = np.asarray(flops, dtype=float), np.asarray(losses, dtype=float)
    keep = np.isfinite(flops) & np.isfinite(losses) & (flops > 0)
    flops, losses = flops[keep], losses[keep]
    if len(np.unique(flops)) < MIN_SIZES:
        return None
    c0 = math.exp(np.mean(np.log(flops)))
    x = np.log(flops / c0)
    low = float(losses.min())

    def law(x, E, a, alpha):  # a = A · C0^(−α): the loss above E at C0
        return E + a * np.exp(-alpha * x)

    best = None
    for e0 in (0.0, 0.5 * low, 0.9 * low):
        above = np.clip(losses - e0, 1e-9, None)
        slope, intercept = np.polyfit(x, np.log(above), 1)  # log(L − E) is linear in x: a start for a and α
        start = (e0, math.exp(intercept), min(max(-slope, 1e-3), 4.0))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params, _ = curve_fit(law, x, losses, p0=start, bounds=([0, 1e-12, 1e-4], [low * (1 - 1e-9), np.inf, 5]),
                                      maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((law(x, *params) - losses) ** 2))
        if best is None or sse < best[0]:
            best = (sse, params)
    if best is None:
        return None
    E, a, alpha = best[1]
    return PowerLaw(float(E), float(a * c0 ** alpha), float(alpha))


def interval(values, level=LEVEL):
    """(low, high) percentiles of `values` holding `level` of them; NaN are dropped, +inf kept (an open end)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if not len(values):
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    # +inf as the largest float, so percentiles between two infinities do not come out NaN (inf − inf)
    low, high = np.percentile(np.minimum(values, np.finfo(float).max), [tail, 100 - tail])
    return tuple(math.inf if v >= np.finfo(float).max else float(v) for v in (low, high))


@dataclass
class ArmFit:
    """One arm's fit and its bootstrap. `points`: {size: [(flops, loss) of each seed]}, a size being
    any key that orders the rungs (n_embd)."""
    arm: str
    points: dict
    fit: PowerLaw | None = None
    draws: list = field(default_factory=list)   # per draw: (PowerLaw or None, {size: (mean flops, mean loss)})

    @property
    def sizes(self):
        return sorted(self.points)

    @property
    def runs(self):
        return sum(len(p) for p in self.points.values())

    @property
    def note(self):
        if self.fit is None:
            return NOT_ENOUGH if len(self.points) < MIN_SIZES else "the fit did not converge"
        failed = sum(1 for law, _ in self.draws if law is None)
        notes = [f"{len(self.draws) - failed} of {len(self.draws)} bootstrap fits converged" if failed else "",
                 AT_BOUND if self.fit.E <= 1e-9 else ""]
        return "; ".join(filter(None, notes))

    def means(self):
        """{size: (mean flops, mean loss)} over its seeds."""
        return {size: tuple(np.mean(np.asarray(p, dtype=float), axis=0)) for size, p in self.points.items()}

    @property
    def flops_range(self):
        flops = [f for p in self.points.values() for f, _ in p]
        return (min(flops), max(flops)) if flops else (math.nan, math.nan)

    def laws(self):
        return [law for law, _ in self.draws if law is not None]

    def parameter(self, name):
        """(fitted value, 95% low, high) of "E", "A" or "alpha"."""
        if self.fit is None:
            return math.nan, math.nan, math.nan
        return (getattr(self.fit, name), *interval([getattr(law, name) for law in self.laws()]))

    def loss_at(self, flops):
        """(fitted loss, 95% low, high) at `flops`."""
        if self.fit is None:
            return math.nan, math.nan, math.nan
        return (float(self.fit.loss(flops)), *interval([float(law.loss(flops)) for law in self.laws()]))


def fit_arm(arm, points, draws=DRAWS, seed=0):
    """ArmFit of `arm` on `points` ({size: [(flops, loss) per seed]}), with `draws` bootstrap refits
    (seeds resampled within each size); deterministic for a given `seed`."""
    points = {size: [p for p in found if all(map(math.isfinite, p))] for size, found in points.items()}
    points = {size: found for size, found in points.items() if found}
    found = ArmFit(arm, points)
    flat = [p for size in found.sizes for p in points[size]]
    found.fit = fit_power_law(*zip(*flat)) if flat else None
    if found.fit is None:
        return found
    rng = np.random.default_rng(seed)
    fitted = {}  # a resample's fit, by which seeds it drew at each size: 2 seeds at 3 sizes make only 27
    for _ in range(draws):
        picks = tuple((size, tuple(sorted(rng.integers(0, len(points[size]), len(points[size])))))
                      for size in found.sizes)
        sample = {size: [points[size][i] for i in chosen] for size, chosen in picks}
        if picks not in fitted:
            fitted[picks] = fit_power_law(*zip(*[p for size in found.sizes for p in sample[size]]))
        means = {size: tuple(np.mean(np.asarray(p, dtype=float), axis=0)) for size, p in sample.items()}
        found.draws.append((fitted[picks], means))
    return found


def multiplier(law_a, law_b, flops):
    """How many times B's compute A needs for the loss B reaches at `flops` (along both fitted curves)."""
    return float(law_a.flops_for(law_b.loss(flops)) / flops)


@dataclass(frozen=True)
class Multiplier:
    """Arm A's compute over arm B's for the same loss, at one compute of B's (module docstring)."""
    of: str
    against: str
    size: object          # B's size (its n_embd) where measured; None along the curves
    flops: float          # B's compute there
    value: float
    ci_low: float
    ci_high: float
    extrapolated: bool    # a curve read outside the FLOPs its arm measured (A's at the compute it needs; B's at `flops`)

    def text(self):
        if not math.isfinite(self.value):
            return "not reached"
        return f"{self.value:.3g}x [95% CI {self.ci_low:.3g}, {self.ci_high:.3g}]"


def _overlap(a, b):
    (a0, a1), (b0, b1) = a.flops_range, b.flops_range
    return max(a0, b0), min(a1, b1)


def _outside(found, flops):
    """Is `flops` outside the FLOPs `found` (an ArmFit) measured, give or take rounding?"""
    low, high = found.flops_range
    return not low * (1 - 1e-9) <= flops <= high * (1 + 1e-9)


def measured_multipliers(a, b):
    """A's Multiplier over B at each of B's measured sizes: A's fitted compute to reach B's mean loss
    there, over B's mean FLOPs there, extrapolated where that compute lies outside what A measured;
    [] without A's fit."""
    if a.fit is None:
        return []
    out = []
    for size, (flops, loss) in sorted(b.means().items()):
        draws = [float(law.flops_for(means[size][1]) / means[size][0])
                 for (law, _), (_, means) in zip(a.draws, b.draws) if law is not None and size in means]
        if not draws:  # B has no bootstrap of its own (no fit): its seeds resampled here
            draws = [float(law.flops_for(loss) / flops) for law in a.laws()]
        needed = float(a.fit.flops_for(loss))
        out.append(Multiplier(a.arm, b.arm, size, flops, needed / flops, *interval(draws),
                              extrapolated=_outside(a, needed)))
    return out


def curve_multipliers(a, b, count=9, beyond=4.0):
    """A's Multiplier over B along both fitted curves at `count` computes, log-spaced from B's smallest
    measured compute / `beyond` to its largest × `beyond`; [] unless both fitted."""
    if a.fit is None or b.fit is None:
        return []
    b0, b1 = b.flops_range
    out = []
    for flops in np.geomspace(b0 / beyond, b1 * beyond, count):
        draws = [multiplier(la, lb, flops) for (la, _), (lb, _) in zip(a.draws, b.draws)
                 if la is not None and lb is not None]
        value = multiplier(a.fit, b.fit, flops)
        out.append(Multiplier(a.arm, b.arm, None, float(flops), value, *interval(draws),
                              extrapolated=_outside(b, flops) or _outside(a, value * flops)))
    return out


@dataclass(frozen=True)
class Crossing:
    flops: float
    loss: float
    extrapolated: bool  # outside the FLOPs both arms measured


def crossings(a, b, span=1e6):
    """Where A's and B's fitted curves cross, between the smallest measured compute / `span` and the
    largest × `span`, each flagged as an extrapolation outside the FLOPs both measured."""
    from scipy.optimize import brentq

    if a.fit is None or b.fit is None:
        return []
    (a0, a1), (b0, b1) = a.flops_range, b.flops_range
    low, high = _overlap(a, b)
    grid = np.geomspace(min(a0, b0) / span, max(a1, b1) * span, 2000)
    gap = a.fit.loss(grid) - b.fit.loss(grid)
    found = []
    for i in np.flatnonzero(np.sign(gap[:-1]) * np.sign(gap[1:]) < 0):
        log_c = brentq(lambda u: float(a.fit.loss(math.exp(u)) - b.fit.loss(math.exp(u))),
                       math.log(grid[i]), math.log(grid[i + 1]))
        flops = math.exp(log_c)
        found.append(Crossing(flops, float(a.fit.loss(flops)), not low <= flops <= high))
    return found
