from nanokimi.training.model import LanguageModel
from nanokimi.experiments.compare import architecture


def test_seed_preset_parameter_counts_match_the_original():
    # Tiny Shakespeare has 65 distinct characters.
    assert LanguageModel(architecture("nanogpt", vocab_size=65)).num_params() == 209_729
    assert LanguageModel(architecture("nanokimi", vocab_size=65)).num_params() == 278_097


def test_top_k_reduces_active_parameters_by_the_unchosen_experts():
    model = LanguageModel(architecture("nanokimi", vocab_size=65, top_k=1))
    per_expert = 64 * 128 + 128 + 64 * 64 + 64  # Linear(C, 2C) + Linear(C, C), with biases
    assert model.active_params() == 278_097 - 4 * 3 * per_expert
