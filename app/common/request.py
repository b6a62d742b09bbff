"""A page's controls turned into a request, or the reasons it cannot train.

The engine checks every setting (the config classes, `Corpus.check`) and says what is wrong in its
own words; the app only adds advice for the setting it names (`HINTS`).
"""

from nanokimi.settings import SettingError
from nanokimi.training.data import DataError

from .controls import CONTROLS
from .datasets import corpus

def _heads_hint(values):
    n_embd = values["n_embd"]
    fits = [h for h in range(1, 17) if n_embd % h == 0]
    return f"Choose {', '.join(map(str, fits[:-1]))} or {fits[-1]} heads, or another embedding size."


def _balancing_hint(name):
    """Advice for a balancing setting the engine refused: it balances sparse routing only, and one way at a time."""
    label = CONTROLS[name][1]

    def hint(values):
        experts, top_k = values["experts"], values["top_k"]
        if 0 < top_k < experts:  # sparse already: both ways were asked
            return f"Set {CONTROLS['aux_loss'][1]} or {CONTROLS['bias_rate'][1]} to 0."
        if experts < 2:
            return f"Choose two or more Experts and fewer Top-k experts, or set {label} to 0."
        return f"Choose Top-k experts from 1 to {experts - 1} (sparse routing), or set {label} to 0."
    return hint


HINTS = {  # advice the app adds to the engine's message about a setting, from the page's values
    "n_head": _heads_hint,
    "top_k": lambda values: f"Choose at most {values['experts']} (Experts), or dense (all).",
    "block_size": lambda values: "Choose a smaller Block size or a longer text.",
    "aux_loss": _balancing_hint("aux_loss"),
    "bias_rate": _balancing_hint("bias_rate"),
}


def explain(err, values):
    """The engine's sentences for a SettingError or DataError, each with the app's advice added."""
    problems = err.problems if isinstance(err, SettingError) else [(getattr(err, "setting", None), str(err))]
    out = []
    for setting, sentence in problems:
        hint = HINTS.get(setting)
        text = sentence[0].upper() + sentence[1:]
        out.append(f"{text}. {hint(values)}" if hint else text)
    return out


def build_request(builder, values, data, *args, **kwargs):
    """`builder(*args, data=..., data_label=..., **values, **kwargs)` (request.comparison or
    request.ablation) and the engine's check that the text fits the block size: (the request, [])
    or (None, the reasons it cannot train, with the app's advice)."""
    if data[0] is None:
        return None, [data[1][0].upper() + data[1][1:]]
    try:
        request = builder(*args, data=data[0], data_label=data[1], **values, **kwargs)
        corpus(*data).check(values["block_size"])
        return request, []
    except (SettingError, DataError) as err:
        return None, explain(err, values)
