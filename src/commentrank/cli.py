"""The scripts' command lines: one parser for all of them, whose errors are one line.

`Parser` is TRL's `TrlParser` over the dataclasses of `commentrank.configs` (each field a `--flag` and a YAML key of a
`--config` recipe); `ArgumentParser` is plain argparse for the small scripts. Both stop on a bad argument with one line
`prog: error: ...` and exit code 2, as argparse does, but without the usage block and with the closest name for a
typo: an unknown flag or recipe key, a value outside its choices. A missing or broken recipe names the file (and the
YAML line), and a dataclass's `__post_init__` check (a `UsageError`, any `ValueError`) is reported the same way.
`--debug` (or COMMENTRANK_DEBUG=1) shows the traceback of any error instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from transformers.hf_argparser import string_to_bool
from trl import TrlParser

from commentrank.io_utils import DEBUG_ENV, UsageError, check_at_least, debug_enabled, did_you_mean, usage_exit

DEBUG_HELP = f"Show the traceback of an error (also: {DEBUG_ENV}=1)."
# Options of TRL's configs (RewardConfig, SFTConfig) that must be positive: TRL does not check them.
POSITIVE_TRL_OPTIONS = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                        "max_length")  # fmt: skip
BOOL_WORDS = ("true", "false", "yes", "no", "y", "n", "t", "f", "1", "0")  # transformers' string_to_bool
_INVALID_CHOICE = re.compile(r"invalid choice: '(?P<value>[^']*)' \(choose from (?P<choices>.*)\)$")


def _is_training_arguments(obj) -> bool:
    """Whether `obj` is a transformers `TrainingArguments` (TRL's configs), without importing it (and torch)."""
    return any(
        c.__name__ == "TrainingArguments" and c.__module__.startswith("transformers") for c in type(obj).__mro__
    )


def check_eval_split(splits, split: str, eval_strategy) -> None:
    """UsageError when evaluation is asked for (`eval_strategy` other than no) on a split the dataset lacks."""
    strategy = getattr(eval_strategy, "value", eval_strategy)
    if strategy != "no" and split not in splits:
        raise UsageError(
            f"--eval_strategy {strategy} evaluates on split '{split}' (--dataset_test_split), which the dataset does "
            f"not have (its splits: {', '.join(sorted(splits))}): set --eval_strategy no or name one of them"
        )


class OneLineErrors:
    """Mixed into an argparse parser: errors are one line, `--debug` shows tracebacks, unknown flags get the closest
    known flag."""

    def error(self, message: str):
        message = re.sub(r"(--[\w-]+)=\S*", r"\1=...", message)  # argparse repeats `--flag=value`: never a value
        match = _INVALID_CHOICE.search(message)
        if match:
            message += did_you_mean(match["value"], re.findall(r"'([^']*)'", match["choices"]))
        usage_exit(self.prog, message)

    def _add_debug(self) -> None:
        if "--debug" not in self._option_string_actions:  # transformers' TrainingArguments has a --debug OPTIONS
            self.add_argument("--debug", action="store_true", help=DEBUG_HELP)
        for action in self._actions:  # HfArgumentParser's --no_<flag> of a True-default bool repeats the flag's help
            if action.option_strings and action.option_strings[0].startswith("--no_") and action.const is False:
                action.help = f"Turn {action.option_strings[0][len('--no_') :]} off (as --{action.dest} false)."
                action.default = argparse.SUPPRESS  # no "(default: False)": the flag's own default is shown
        for action in self._actions:  # a help text is a %-format: a plain '%' ("95%") would crash --help
            if action.help and "%" in action.help and "%(" not in action.help:
                action.help = action.help.replace("%", "%%")

    def parse_known_args(self, args=None, namespace=None):
        namespace, rest = super().parse_known_args(args, namespace)
        if self._option_string_actions["--debug"].help == DEBUG_HELP and vars(namespace).pop("debug", False):
            os.environ[DEBUG_ENV] = "1"
        vars(namespace).pop("config", None)  # TrlParser reads --config itself
        return namespace, rest

    def parse_args(self, args=None, namespace=None):
        namespace, rest = self.parse_known_args(args, namespace)
        if rest:
            self.error(self.unknown(rest))
        return namespace

    def unknown(self, rest: list[str]) -> str:
        flags = [arg.split("=", 1)[0] for arg in rest if arg.startswith("-")]
        if not flags:
            return f"unexpected argument {rest[0]!r}"
        known = [s for action in self._actions for s in action.option_strings if s.startswith("--")]
        return f"unknown flag {flags[0]}{did_you_mean(flags[0], known, quote='')}"


class ArgumentParser(OneLineErrors, argparse.ArgumentParser):
    """argparse with one-line errors and `--debug` (the scripts without a dataclass of options)."""

    def __init__(self, prog: str, description: str | None = None, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # a prefix of a flag is an unknown flag, named with the closest
        super().__init__(prog=prog, description=description, **kwargs)
        self._bool_flags: set[str] = set()
        self._add_debug()

    def add_model_loading_options(self) -> None:
        """The `ModelLoadingOptions` of the dataclass scripts, spelt and parsed as there (`--allow_pickle_weights`,
        bare or followed by true/false)."""
        from commentrank.configs import ModelLoadingOptions

        for option in dataclasses.fields(ModelLoadingOptions):
            flag = f"--{option.name}"
            self.add_argument(flag, type=string_to_bool, nargs="?", const=True, default=option.default,
                              help=option.metadata["help"].replace("%", "%%"))  # fmt: skip
            self._bool_flags.add(flag)

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        for at in reversed(range(len(args))):  # a bare boolean flag before a positional: it does not take it
            following = args[at + 1].lower() if at + 1 < len(args) else "-"
            if args[at] in self._bool_flags and not following.startswith("-") and following not in BOOL_WORDS:
                args.insert(at + 1, "true")
        return super().parse_known_args(args, namespace)


class Parser(OneLineErrors, TrlParser):
    """TrlParser over commentrank's and TRL's dataclasses, with one-line errors (see the module's docstring)."""

    def __init__(self, dataclass_types: Iterable[type], prog: str, description: str | None = None):
        super().__init__(list(dataclass_types), prog=prog, description=description, allow_abbrev=False)
        self.add_argument("--config", default=None, help="YAML recipe: its keys are the flags' names (flags win).")
        self._add_debug()

    def parse_args_and_config(self, args: Iterable[str] | None = None, **kwargs) -> tuple:
        args = list(sys.argv[1:] if args is None else args)
        args = [part for arg in args for part in (arg.split("=", 1) if arg.startswith("--config=") else [arg])]
        if "--debug" in args:
            at = args.index("--debug")
            bare = at + 1 == len(args) or args[at + 1].startswith("-")
            ours = self._option_string_actions["--debug"].help == DEBUG_HELP
            if ours or bare:
                os.environ[DEBUG_ENV] = "1"
                if not ours:  # transformers' --debug takes options (underflow_overflow): a bare --debug is ours
                    del args[at]
        if "--config" in args:
            self.check_recipe(args)
        flags = [arg.split("=", 1)[0] for arg in args if arg.startswith("--")]
        unknown = [flag for flag in flags if flag not in self._option_string_actions]
        if unknown:  # before the dataclasses check their values
            self.error(self.unknown(unknown))
        try:
            *objects, rest = super().parse_args_and_config(args, return_remaining_strings=True)
        except ValueError as err:  # a dataclass's __post_init__
            if debug_enabled():
                raise
            self.error(str(err))
        if rest and not kwargs.get("return_remaining_strings"):
            self.error(self.unknown(rest))
        try:
            for obj in objects:
                if _is_training_arguments(obj) or not type(obj).__module__.startswith("commentrank"):
                    check_at_least(obj, POSITIVE_TRL_OPTIONS)  # TRL's options (ours check themselves)
                if hasattr(obj, "model_name_or_path"):  # TRL's ModelConfig, best_of_n's policy
                    from commentrank.bundled_models import check_model_name

                    check_model_name(obj.model_name_or_path)
        except UsageError as err:
            if debug_enabled():
                raise
            self.error(str(err))
        return (*objects, rest) if kwargs.get("return_remaining_strings") else tuple(objects)

    def check_recipe(self, args: list[str]) -> None:
        """The `--config` file exists, is YAML, is a mapping and has only known keys: else one line naming it."""
        import yaml

        at = args.index("--config")
        if at + 1 >= len(args) or args[at + 1].startswith("--"):
            self.error("--config needs a YAML recipe file")
        path = args[at + 1]
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            self.error(f"--config {path}: cannot read it ({err.strerror or type(err).__name__})")
        except UnicodeDecodeError as err:
            self.error(f"--config {path}: not UTF-8 text (byte {err.start})")
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            recipe = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            self.error(f"--config {path}{where}: not valid YAML ({getattr(err, 'problem', None) or err})")
        if not isinstance(recipe, dict):
            self.error(f"--config {path}: a recipe is a YAML mapping of option: value, got {type(recipe).__name__}")
        known = {action.dest for action in self._actions} - {"help", "config", "debug"}
        lines = {str(key.value): key.start_mark.line + 1 for key, _ in node.value}
        for key in recipe:
            if str(key) not in known and key != "env":
                self.error(f"{path}:{lines.get(str(key), '?')}: unknown key {str(key)!r}{did_you_mean(key, known)}")
