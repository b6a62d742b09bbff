"""A model's health read back from its history (nanokimi/results/health.py): dead experts and the
max/mean load worked out from the loads as training records them, the balancing bias, and the one line
on attention logits and QK-clip. Histories are written by hand, so every number is known."""

import pandas as pd
import pytest

from nanokimi.results import health
from nanokimi.training import routing
from nanokimi.training.qkclip import QK_CLIPS_METRIC, max_logit_metric


def history(rows):
    """A model's history frame from (metric, step, value) rows."""
    return pd.DataFrame([{"metric": metric, "step": step, "value": value} for metric, step, value in rows])


def loads(by_step):
    """report.routing_history's load table from {step: [[layer 0's shares], [layer 1's], …]}."""
    return pd.DataFrame([{"step": step, "layer": layer, "expert": expert, "load": share}
                         for step, layers in by_step.items() for layer, shares in enumerate(layers)
                         for expert, share in enumerate(shares)])


def test_dead_experts_and_the_load_ratio_are_the_engines_own_from_the_loads():
    table = loads({0: [[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]],
                   10: [[0.7, 0.1, 0.2, 0.0], [0.5, 0.5, 0.0, 0.0]]})
    over_time = health.expert_health_history(table)
    dead = over_time[over_time["kind"] == "dead"].set_index(["step", "layer"])["value"].to_dict()
    assert dead == {(0, 0): 0, (0, 1): 2, (10, 0): 1, (10, 1): 2}
    imbalance = over_time[over_time["kind"] == "imbalance"].set_index(["step", "layer"])["value"].to_dict()
    assert imbalance == pytest.approx({(0, 0): 1.0, (0, 1): 2.0, (10, 0): 2.8, (10, 1): 2.0})
    assert health.final_loads(table) == [[0.7, 0.1, 0.2, 0.0], [0.5, 0.5, 0.0, 0.0]]
    assert health.never_chosen(table) == [(1, 2), (1, 3)], "layer 0's expert 3 was chosen at step 0"
    assert routing.health_words(health.final_loads(table), top_k=1) == \
        "layer 0: expert 0 takes 70% of tokens (collapse); expert 3 never chosen; layer 1: experts 2, 3 never chosen"


def test_the_bias_is_read_per_layer_and_expert_and_absent_before_it_was_recorded():
    rows = history([(routing.bias_metric(1, 3), 5, -0.01), (routing.bias_metric(0, 0), 5, 0.02),
                    (routing.load_metric(0, 0), 5, 1.0), ("val_loss", 5, 2.0)])
    assert health.bias_history(rows).to_dict("records") == [
        {"step": 5, "layer": 1, "expert": 3, "bias": -0.01}, {"step": 5, "layer": 0, "expert": 0, "bias": 0.02}]
    assert health.bias_history(history([("val_loss", 5, 2.0)])).empty


def test_the_logit_line_says_where_the_largest_was_and_what_qk_clip_did():
    rows = [(max_logit_metric(0), 0, 3.0), (max_logit_metric(1), 0, 4.0), (max_logit_metric(0), 100, 23.14),
            (max_logit_metric(1), 100, 9.0), ("val_loss", 100, 2.0)]
    assert health.logit_history(history(rows), 2)["max_logit"].tolist() == [3.0, 4.0, 23.14, 9.0]
    assert health.logit_words(history(rows), 2) == "largest attention logit: 23.1 (layer 0, step 100); no QK-clip"
    never = history(rows + [(QK_CLIPS_METRIC, 0, 0), (QK_CLIPS_METRIC, 100, 0)])
    assert health.logit_words(never, 2, 100.0).endswith("; QK-clip at τ = 100 never acted")
    clipped = history(rows + [(QK_CLIPS_METRIC, 0, 0), (QK_CLIPS_METRIC, 100, 37)])
    assert health.logit_words(clipped, 2, 20.0).endswith("; QK-clip at τ = 20 clipped a head 37 times")
    assert health.logit_words(history([("val_loss", 100, 2.0)]), 2) is None, "a run stored before logits were"
