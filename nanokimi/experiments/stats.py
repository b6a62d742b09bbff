"""The statistics of a grid: a mean with its 95% t interval and paired t-test, and Holm's correction.

An effect is estimated from per-seed differences (a paired design, ablation.py), so its test is the
one-sample t-test of those differences against 0 (scipy.stats) and its interval the Student-t
interval of their mean. With several effects at once, Holm's step-down correction says which
survive at ALPHA family-wise. An interval that contains zero is "not distinguishable from zero at
this number of seeds".
"""

import math
import statistics
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05  # the family-wise level Holm's correction holds


@dataclass
class Estimate:
    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    p_value: float = math.nan  # two-sided one-sample t-test of the mean against 0 (paired differences)

    @property
    def excludes_zero(self):
        return self.n > 1 and (self.ci_low > 0 or self.ci_high < 0)


def estimate(values):
    """Mean, standard deviation, 95% t confidence interval and t-test p-value of the finite values."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    n = len(values)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan)
    mean = statistics.fmean(values)
    if n == 1:
        return Estimate(1, mean, math.nan, math.nan, math.nan)
    sd = statistics.stdev(values)
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    p_value = float(stats.ttest_1samp(values, 0.0).pvalue) if sd > 0 else (0.0 if mean else 1.0)
    return Estimate(n, mean, sd, mean - half, mean + half, p_value)


def holm(p_values):
    """Holm's step-down adjusted p-values (same order as given; NaN stays NaN)."""
    finite = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        adjusted[i] = running
    return adjusted
