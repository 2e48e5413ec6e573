"""Command-line flags generated from a run's config dataclass, so defaults exist once.

An example declares its settings once, as a frozen dataclass whose fields carry a help text
(and, where the valid values are known, the choices) in their metadata:

  @dataclasses.dataclass(frozen=True)
  class Config:
      estimator: str = setting("pes", "Gradient estimator.", choices=estimator_names())

`define_flags(Config)` defines one absl flag per field (``--help`` shows its default and
lists the choices; a value outside them is refused naming the flag) and
`config_from_flags(Config)` reads them back into a ``Config``. `check_choices(config)` refuses
the same values in a config built in code (a recipe's ``__post_init__`` calls it), so the
rule has one home for the command line and for Python. ``choices`` may be a function that
lists them, read when a flag is defined or a config checked: a registry that grows as modules
are imported (``architecture_names``) is then read when it is complete.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable, Collection, Sequence
from typing import Any

from absl import flags

from optax_lopt import _checks


def setting(
    default: Any,
    help: str,  # noqa: A002
    *,
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
) -> Any:
    """A dataclass field with its flag's help text and, optionally, its valid values (or a
    function that lists them when asked)."""
    if choices is not None and not callable(choices):
        choices = tuple(choices)
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def choices_of(field: dataclasses.Field) -> tuple[str, ...] | None:
    """A `setting` field's valid values now (None: any value)."""
    choices = field.metadata.get("choices")
    return tuple(choices()) if callable(choices) else choices


def _base_type(hint: Any) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def check_choices(config: Any) -> None:
    """Refuses a field outside its ``choices``: the error names the flag, lists the values.

    Raises:
      ValueError: ``--NAME: expected one of ...; got ...`` for the first such field.
    """
    for field in dataclasses.fields(config):
        choices = choices_of(field)
        if choices is not None:
            _checks.one_of(f"--{field.name}", getattr(config, field.name), choices)


def define_flags(
    config_cls: type,
    flag_values: flags.FlagValues = flags.FLAGS,
    *,
    exclude: Collection[str] = (),
) -> None:
    """Defines one flag per field of ``config_cls`` (an existing flag is left as it is).

    The flags are registered as the calling script's own, so its ``--help`` lists them.
    Fields named in ``exclude`` get no flag (a script that sets them itself, e.g. a benchmark
    looping over ``estimator``).
    """
    caller = sys._getframe(1).f_globals.get("__name__", "")
    module_name = sys.argv[0] if caller == "__main__" else caller
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if field.name in flag_values or field.name in exclude:
            continue
        kind = _base_type(hints[field.name])
        text = field.metadata.get("help", field.name)
        choices = choices_of(field)
        args = (field.name, field.default, text)
        if choices is not None:  # absl's help shows them as <a|b|c>
            flags.DEFINE_enum(
                field.name, field.default, list(choices), text, flag_values=flag_values
            )
        elif kind is bool:
            flags.DEFINE_bool(*args, flag_values=flag_values)
        elif kind is int:
            flags.DEFINE_integer(*args, flag_values=flag_values)
        elif kind is float:
            flags.DEFINE_float(*args, flag_values=flag_values)
        else:
            flags.DEFINE_string(*args, flag_values=flag_values)
        flag_values.register_flag_by_module(module_name, flag_values[field.name])


def config_from_flags(
    config_cls: type,
    flag_values: flags.FlagValues = flags.FLAGS,
    *,
    exclude: Collection[str] = (),
) -> Any:
    """A ``config_cls`` with every field read from its (parsed) flag; ``exclude``: defaults."""
    return config_cls(
        **{
            f.name: flag_values[f.name].value
            for f in dataclasses.fields(config_cls)
            if f.name not in exclude
        }
    )
