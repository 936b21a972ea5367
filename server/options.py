"""Flag > environment variable > default, one way for every command of the project.

    parser = EnvArgumentParser(prog="python -m webui")
    parser.add_env_argument("--port", env="RERANK_UI_PORT", type=int, default=7860, help="port to bind")
    args = parser.parse_with_env(argv, os.environ)     # args.port: flag, else $RERANK_UI_PORT, else 7860

Every option names its variable in `--help` the same way: `port to bind [RERANK_UI_PORT; default 7860]`.
A variable that cannot be read as the option's type is one line (`OptionError`), not a traceback.
The server launcher and the page both use it; it needs nothing beyond the standard library.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


class OptionError(ValueError):
    """A bad value in an environment variable; str() is one line naming the variable."""


def parse_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise OptionError(f"{name} must be true or false, got {value!r}")


@dataclass(frozen=True)
class _EnvOption:
    dest: str
    env: str
    default: Any
    convert: Callable[[str], Any]
    separator: str | None
    """For repeatable options: the variable holds several values split by this."""


class EnvArgumentParser(argparse.ArgumentParser):
    """argparse with `add_env_argument`: options that fall back to a variable, then a default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._env_options: list[_EnvOption] = []

    def add_env_argument(
        self,
        *flags: str,
        env: str,
        help: str,
        default: Any = None,
        shown_default: str | None = None,
        separator: str | None = None,
        **kwargs: Any,
    ) -> argparse.Action:
        """Add an option whose value is the flag, else `env`, else `default`.

        `shown_default` replaces the default in --help where it is computed at run time
        ("detected"); a default of None is not shown.
        """
        shown = shown_default if shown_default is not None else default
        suffix = f"{env}; default {shown}" if shown not in (None, "") else env
        action = self.add_argument(*flags, default=None, help=f"{help} [{suffix}]", **kwargs)
        if action.nargs == 0:  # store_true
            convert: Callable[[str], Any] = lambda raw: parse_bool(raw, env)  # noqa: E731
        else:
            convert = action.type if callable(action.type) else str
        self._env_options.append(_EnvOption(action.dest, env, default, convert, separator))
        return action

    def parse_with_env(self, argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
        args = self.parse_args(argv)
        self.apply_env(args, environ)
        return args

    def apply_env(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        """Fill every option the command line left unset from its variable, else its default,
        here and in the subcommand that was chosen."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(args, action.dest, None) or "")
                if isinstance(chosen, EnvArgumentParser):
                    chosen.apply_env(args, environ)
        for option in self._env_options:
            if getattr(args, option.dest, None) is not None:
                continue
            raw = environ.get(option.env, "").strip()
            value = option.default
            if raw:
                value = self._convert(option, raw)
            setattr(args, option.dest, value)

    @staticmethod
    def _convert(option: _EnvOption, raw: str) -> Any:
        try:
            if option.separator is not None:
                return [option.convert(part.strip()) for part in raw.split(option.separator) if part.strip()]
            return option.convert(raw)
        except (ValueError, argparse.ArgumentTypeError) as error:
            if isinstance(error, OptionError):
                raise
            if option.convert in (int, float):
                raise OptionError(f"{option.env} must be a number, got {raw!r}") from None
            raise OptionError(f"{option.env}={raw!r} is not valid ({error})") from None
