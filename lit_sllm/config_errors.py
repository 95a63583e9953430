"""Config mistakes reported as one actionable message: the key or path that is wrong and how to fix it.

jsonargparse reports a misspelt key inside a screen of namespace output, and an instantiation error wrapped in a
dump of the whole config. `ConfigError` is the suite's error for a setting a user must change; the CLI prints it
alone. `explain_parse_error` turns jsonargparse's unknown-key errors into the full key and its nearest valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting that cannot work as given; the message names the config key and the fix."""


_CLASS_SCOPE = re.compile(r'Parser key "(?P<group>[\w.]+)":.*?given class_path \'(?P<cls>[\w.]+)\'', re.S)
_UNKNOWN = (
    re.compile(r"unrecognized arguments: --(?P<key>[\w.]+)"),
    re.compile(r"Option '(?P<key>[\w.]+)' is not accepted"),
    re.compile(r"does not accept option '(?P<key>[\w.]+)'"),
    re.compile(r"Key '(?P<key>[\w.]+)' is not expected"),
)
_MAX_LINES = 12


def _import_class(path: str) -> type | None:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def parser_keys(parser: Any) -> list[str]:
    """Every dotted key a jsonargparse parser accepts, subcommands' keys included."""
    keys: list[str] = []
    for action in getattr(parser, "_actions", []):
        choices = getattr(action, "_name_parser_map", None)
        if choices:
            keys += [key for sub in choices.values() for key in parser_keys(sub)]
        elif action.dest not in ("help", "config", "print_config") and not action.dest.endswith(".help"):
            keys.append(action.dest)
    return keys


def _dataclasses_in(annotation: Any) -> list[type]:
    """The dataclasses an annotation names, directly or inside a union (`OptimSpec | None`)."""
    if dataclasses.is_dataclass(annotation):
        return [annotation]
    return [arg for arg in typing.get_args(annotation) if dataclasses.is_dataclass(arg)]


def class_keys(cls: type) -> list[str]:
    """The dotted `init_args` keys of a class, dataclass arguments flattened (`optimizer.lr`), following `**kwargs`
    up to the base classes that define them. A class's own `__new__` (a factory such as `HFSpeechEncoder`) is read
    instead of its `__init__`, as jsonargparse reads it."""
    keys: list[str] = []
    for klass in cls.__mro__:
        method = next((vars(klass)[name] for name in ("__new__", "__init__") if name in vars(klass)), None)
        if klass is object or method is None:
            continue
        method = getattr(method, "__func__", method)  # `__new__` is a staticmethod in the class dict
        try:
            hints = typing.get_type_hints(method)
        except Exception:  # an annotation that does not resolve: names only
            hints = {}
        parameters = inspect.signature(method).parameters.values()
        for parameter in parameters:
            if parameter.name in ("self", "cls") or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            keys.append(parameter.name)
            for dataclass in _dataclasses_in(hints.get(parameter.name)):
                keys += [f"{parameter.name}.{field.name}" for field in dataclasses.fields(dataclass)]
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
            break
    return keys


def nearest(key: str, candidates: Iterable[str], count: int = 3) -> list[str]:
    """Valid keys closest to a misspelt one: whole dotted keys first, then the last segment alone."""
    candidates = sorted(set(candidates))
    close = difflib.get_close_matches(key, candidates, n=count, cutoff=0.6)
    if not close:
        leaf = key.rpartition(".")[2]
        by_leaf = {c.rpartition(".")[2]: c for c in candidates}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=count, cutoff=0.6)]
    return close


def explain_parse_error(err: BaseException, parser: Any) -> str:
    """A short message for a jsonargparse parse error: an unknown key with its nearest valid keys, else the error's
    first lines without the namespace dump."""
    text = str(err)
    choice = _bad_choice(text)
    if choice:
        return choice
    for pattern in _UNKNOWN:
        found = pattern.search(text)
        if found:
            break
    else:
        lines = [line for line in text.splitlines() if not line.strip().startswith(("Given value", "Subtypes"))]
        return "\n".join(lines[:_MAX_LINES])
    key = found["key"]
    scope = _CLASS_SCOPE.search(text)
    prefix, candidates = "", parser_keys(parser)
    if scope:
        cls = _import_class(scope["cls"])
        prefix, candidates = f"{scope['group']}.init_args.", class_keys(cls) if cls else []
        key = key.removeprefix(prefix)
    close = nearest(key, candidates)
    hint = f"did you mean {' or '.join(prefix + c for c in close)}?" if close else "see `--print_config` for the keys."
    return f"{prefix}{key} is not a config key; {hint}"


_LITERAL = re.compile(r"Expected a typing\.Literal\[(?P<choices>[^\]]*)\]\. Got value: (?P<value>.*)")
_PARSER_KEY = re.compile(r'^(?P<indent> *)Parser key "(?P<key>[^"]+)":', re.M)


def _bad_choice(text: str) -> str | None:
    """ "<key> must be one of ...; got ..." for a value outside a setting's closed set (a `Literal`)."""
    found = _LITERAL.search(text)
    if not found:
        return None
    chain: list[tuple[int, str]] = []  # the nesting of parser keys above the failing one, by indentation
    for key in _PARSER_KEY.finditer(text[: found.start()]):
        indent = len(key["indent"])
        chain = [(i, k) for i, k in chain if i < indent] + [(indent, key["key"])]
    keys = [key for _, key in chain]
    path = ".".join(keys[:1] + ["init_args"] + keys[1:]) if len(keys) > 1 else ".".join(keys)
    return f"{path} must be one of {found['choices']}; got {found['value'].strip()!r}."


def _unreachable(err: BaseException) -> bool:
    """Whether a load failed because no hub could be reached (rather than because the id does not exist)."""
    text = f"{err} {err.__cause__} {err.__context__}"
    return any(sign in text for sign in ("couldn't connect", "Name or service not known", "offline mode"))


def missing_path_error(key: str, path: str, what: str, err: BaseException) -> ConfigError:
    """The error for a pretrained path that cannot be loaded: the key, the path, and why."""
    detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    if Path(path).expanduser().exists():
        reason = f"the folder exists but does not hold a {what} ({detail})"
    elif path.startswith(("/", ".", "~")) or path.count("/") > 1:  # hub ids are "name" or "org/name"
        reason = "no such file or folder"
    elif _unreachable(err):
        reason = (
            "it is not a local folder, and no model hub is reachable from this machine to fetch it as a hub id; "
            "download it where a hub is reachable and give the folder (HF_HUB_OFFLINE=1 skips the retries)"
        )
    else:
        reason = f"it is neither a local folder nor a hub id that loads ({detail})"
    return ConfigError(f"{key}: cannot load the {what} from {path!r}: {reason}.")


def load_pretrained(key: str, what: str, path: str, load: Any) -> Any:
    """`load()` (a `from_pretrained` call on `path`), with a missing or unreachable path reported by config key.

    Only the errors transformers raises for a path it cannot find (OSError, the hub's id validation) are turned
    into a `ConfigError`; anything else (a broken checkpoint, a bad config) propagates as it is.
    """
    from huggingface_hub.errors import HFValidationError

    try:
        return load()
    except (OSError, HFValidationError) as err:
        raise missing_path_error(key, path, what, err) from err
