"""A patch of torch's private dynamo cache, so that torch.optim runs without importing torch._dynamo.

nanokimi never compiles, and importing torch._dynamo cost 1.3 s of every worker's start-up here
(tests/test_imports.py checks that a worker trains without it).
"""

import torch


def optim_without_dynamo():
    """Let torch.optim.Optimizer's methods run without importing torch._dynamo (nanokimi never compiles).

    torch wraps Optimizer.add_param_group, zero_grad, state_dict and load_state_dict so that
    torch.compile won't trace into them; on its first call the wrapper imports torch._dynamo to
    build that "disabled" version, which took 1.3 s here (it loads sympy and the tracer): more than
    a worker's whole start-up after `import torch`. Outside a compiled graph the disabled version
    of a method is the method itself, so this puts the method in the cache the wrapper looks at
    first (torch._compile._disable_dynamo). Should torch rename that cache, the wrappers import
    torch._dynamo again: slower, never wrong (tests/test_imports.py would say so).
    """
    for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict"):
        method = getattr(torch.optim.Optimizer, name)
        plain = getattr(method, "__wrapped__", None)
        if plain is not None:
            setattr(plain, "__dynamo_disable", plain)
