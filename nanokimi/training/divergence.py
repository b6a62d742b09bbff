"""When a run has diverged: the rule, with its reasons, and the sentence that says so.

Besides a loss that stops being finite, a loss that stays finite but is clearly worse than the
untrained model's. A learning-rate sweep hits this on purpose: learning rate 10 took the quick
preset's validation losses from 4.6 to between 250 and 3,700 nats, finite all along.
"""

import math
import statistics

DIVERGENCE_WINDOW = 50  # training steps whose mean loss is watched between evaluations


def divergence_limit(untrained_loss):
    """The loss above which a run has diverged: the untrained model's loss + max(1 nat, half of it).

    `untrained_loss` is the validation loss measured at step 0. An untrained char model predicts
    about uniformly, so that is roughly ln(vocab): 4.2-4.7 nats on Tiny Shakespeare, a limit near
    7. Training only ever has to lower it; a model half as bad again as no training at all is not
    learning slowly, it has blown up. The 1-nat floor keeps the margin clear for tiny vocabularies,
    whose untrained loss is small.
    """
    return untrained_loss + max(1.0, 0.5 * untrained_loss)


def diverged(untrained_loss, loss):
    """True when `loss` shows a diverged run: not finite, or above divergence_limit(untrained_loss).

    `loss` is a validation loss, or smoothed_train_loss() of the training losses: one noisy batch
    must not end a run, a window of them far above the limit does.
    """
    return not math.isfinite(loss) or loss > divergence_limit(untrained_loss)


def smoothed_train_loss(train_losses, window=DIVERGENCE_WINDOW):
    """Mean of the last `window` training losses; None until there are that many."""
    return statistics.fmean(train_losses[-window:]) if len(train_losses) >= window else None


def loss_text(loss):
    return f"{loss:,.2f}" if abs(loss) < 1e6 else f"{loss:.3g}"


def divergence_message(what, loss, when, untrained_loss):
    """E.g. 'validation loss 1,900.30 at step 200 is above 6.98, far worse than the untrained model's 4.65: ...'."""
    return (f"{what} {loss_text(loss)} {when} is above {loss_text(divergence_limit(untrained_loss))}, far worse "
            f"than the untrained model's {loss_text(untrained_loss)}: the run diverged")
