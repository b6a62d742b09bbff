"""Settings: the fields of nanokimi's config dataclasses that a person may set, and their one check.

A setting is a dataclass field declared with `setting(default, help)`: `ModelConfig` (model.py),
`OptimizerConfig` (optim.py) and `RunConfig` (train.py) declare theirs, and everything that lists
settings derives the list from those fields: the CLI's flags, the app's request, the presets and the
stored requests. Fields without `help` (a run's name, its checkpoint path, the vocabulary size) are
not settings: the engine fills them in.

Nested configs are flattened by field name (`RunConfig.model.n_embd` is the setting `n_embd`), so
one dict of settings describes a run; `apply` puts such a dict back into the right nested config.

Validation lives in the config classes. Each collects every problem it finds, as
`(setting, sentence)`, and raises one `SettingError` holding them all: the CLI prints it as one
line, the app shows each sentence and may add advice for the setting it names.
"""

import dataclasses
import math
import typing


def setting(default, help, *, choices=None, moe=False):
    """A dataclass field that a person may set. `choices`: the values allowed; `moe`: the setting
    only exists in the Mixture-of-Experts feed-forward (a dense model ignores it)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "moe": moe})


class SettingError(ValueError):
    """Settings that cannot train, each problem as (setting name, sentence in the engine's words)."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(sentence for _, sentence in self.problems))

    @property
    def settings(self):
        return [name for name, _ in self.problems]


class Problems(list):
    """What a `validate()` collects before raising: `.add(setting, sentence)`, then `.raise_any()`."""

    def add(self, name, sentence):
        self.append((name, sentence))

    def extend_from(self, validate):
        try:
            validate()
        except SettingError as err:
            self.extend(err.problems)

    def check_choices(self, config):
        for f in fields(type(config)):
            allowed = f.metadata["choices"]
            value = getattr(config, f.name)
            if allowed and value not in allowed and not (value is None and f.default is None):
                self.add(f.name, f"{f.name} must be one of {', '.join(map(str, allowed))}; got {value!r}")

    def at_least(self, config, minimum, *names):
        for name in names:
            if getattr(config, name) < minimum:
                self.add(name, f"{name} must be at least {minimum}, got {getattr(config, name)}")

    def finite(self, config):
        """Name every float setting of `config` that is nan or ±inf and no earlier check named (a range
        check such as `lr > 0` lets inf through): call it after the range checks, one sentence a setting."""
        for f in fields(type(config)):
            value = getattr(config, f.name)
            if (value_type(f, type(config)) is float and f.name not in self.settings
                    and not math.isfinite(value)):
                self.add(f.name, f"{f.name} must be a finite number, got {value}")

    @property
    def settings(self):
        return [name for name, _ in self]

    def raise_any(self):
        if self:
            raise SettingError(self)


def fields(cls):
    """The settings of a config class: its fields declared with `setting()`, in order."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def nested(cls):
    """{field name: config class} of the configs nested in `cls` (a RunConfig's model and optimizer)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def all_fields(cls):
    """Every setting of `cls` and of the configs nested in it, flattened: [(field, owning class)]."""
    out = [(f, cls) for f in fields(cls)]
    for inner in nested(cls).values():
        out.extend(all_fields(inner))
    return out


def names(cls):
    return [f.name for f, _ in all_fields(cls)]


def value_type(f, owner):
    """The Python type a setting's values have (int, float or str; Optional[str] gives str)."""
    hint = typing.get_type_hints(owner)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def flatten(config):
    """{setting: value} of a config and the configs nested in it."""
    values = {f.name: getattr(config, f.name) for f in fields(type(config))}
    for name in nested(type(config)):
        values.update(flatten(getattr(config, name)))
    return values


def apply(config, **values):
    """`config` with settings replaced, each in the nested config that owns it; None leaves a
    setting as it is (an unset CLI flag). Unknown names raise SettingError."""
    values = {k: v for k, v in values.items() if v is not None}
    unknown = sorted(set(values) - set(names(type(config))))
    if unknown:
        raise SettingError([(name, f"unknown setting {name!r}") for name in unknown])
    own = {f.name for f in fields(type(config))}
    changes = {k: v for k, v in values.items() if k in own}
    for name, inner_cls in nested(type(config)).items():
        inner = {k: v for k, v in values.items() if k in names(inner_cls)}
        if inner:
            changes[name] = apply(getattr(config, name), **inner)
    return dataclasses.replace(config, **changes)
