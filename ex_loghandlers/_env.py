"""Handler options from environment variables: ``ExHTTPHandler.from_env()``.

A twelve-factor app keeps its configuration in the environment, so that one build runs in every
deployment. Each option has one variable, named by the option in capitals after a prefix
(``EX_LOG_`` by default): ``EX_LOG_URL``, ``EX_LOG_BATCH_SIZE``, ... A variable holds text; it is
converted here to the type its option takes, with an error that names the variable and what it
accepts. The constructor then checks the value as it checks every option, and its error is
completed with the variable the value came from. A variable set to the empty string counts as
unset (container and CI tools often set one to mean "the default").
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar, Union
from urllib.parse import unquote

DEFAULT_ENV_PREFIX = "EX_LOG_"

_Made = TypeVar("_Made", bound=logging.Handler)

#: Converts the text of a variable (named by the first argument) to an option's value.
Converter = Callable[[str, str], Any]

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _text(variable: str, text: str) -> str:
    return text


def _whole_number(variable: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{variable} must be a whole number, e.g. 100, not {text!r}") from None


def _seconds(variable: str, text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(
            f"{variable} must be a number of seconds, e.g. 5 or 0.5, not {text!r}"
        ) from None


def _word(text: str) -> Optional[bool]:
    word = text.strip().lower()
    return True if word in _TRUE else False if word in _FALSE else None


def _flag(variable: str, text: str) -> bool:
    value = _word(text)
    if value is None:
        raise ValueError(
            f"{variable} must be true or false (or 1/0, yes/no, on/off), not {text!r}"
        )
    return value


def _verify(variable: str, text: str) -> Union[bool, str]:
    """true/false, or the path of a CA bundle (a file or a directory)."""
    value = _word(text)
    return text if value is None else value


def _cert(variable: str, text: str) -> Union[str, Tuple[str, str]]:
    """One PEM file with certificate and key, or ``CERT_FILE,KEY_FILE``."""
    paths = [part.strip() for part in text.split(",")]
    if len(paths) == 1:
        return paths[0]
    if len(paths) == 2 and all(paths):
        return (paths[0], paths[1])
    raise ValueError(
        f"{variable} must be the path of a PEM file with the client certificate and its key, or"
        f" two paths 'CERT_FILE,KEY_FILE', not {text!r}"
    )


def _headers(variable: str, text: str) -> Dict[str, str]:
    """``Name=value,Name2=value2``, values percent-decoded: the syntax OpenTelemetry's
    ``OTEL_EXPORTER_OTLP_HEADERS`` uses, so one value can serve both. Values are never shown in
    an error: they are tokens, most of the time."""
    headers: Dict[str, str] = {}
    for number, item in enumerate(text.split(","), start=1):
        if not item.strip():
            continue  # a trailing comma
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise ValueError(
                f"{variable} must be comma-separated Name=value pairs, e.g."
                f" 'Authorization=Bearer%20abc,X-Tenant=blue' (a comma in a value is written"
                f" %2C); pair {number} has no {'name' if equals else 'Name='}"
            )
        headers[name.strip()] = unquote(value.strip())
    return headers


def _level(variable: str, text: str) -> int:
    name = text.strip().upper()
    if name.isdigit():
        return int(name)
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ValueError(
            f"{variable} must be a level name (DEBUG, INFO, WARNING, ERROR, CRITICAL) or a"
            f" number, not {text!r}"
        )
    return level


#: Variable (after the prefix) -> the constructor option it sets, and how its text is read.
OPTIONS: Dict[str, Tuple[str, Converter]] = {
    "URL": ("url", _text),
    "METHOD": ("method", _text),
    "APP_NAME": ("app_name", _text),
    "PREFIX": ("prefix", _text),
    "WIRE_FORMAT": ("wire_format", _text),
    "BATCH_SIZE": ("batch_size", _whole_number),
    "FLUSH_INTERVAL": ("flush_interval", _seconds),
    "MAX_QUEUE_SIZE": ("max_queue_size", _whole_number),
    "MAX_QUEUE_BYTES": ("max_queue_bytes", _whole_number),
    "OVERFLOW": ("overflow", _text),
    "TIMEOUT": ("timeout", _seconds),
    "MAX_RETRY_TIME": ("max_retry_time", _seconds),
    "SHUTDOWN_TIMEOUT": ("shutdown_timeout", _seconds),
    "HEADERS": ("headers", _headers),
    "COMPRESS": ("compress", _flag),
    "VERIFY": ("verify", _verify),
    "CERT": ("cert", _cert),
    "SPOOL_PATH": ("spool_path", _text),
    "SPOOL_MAX_BYTES": ("spool_max_bytes", _whole_number),
    "MAX_BATCH_BYTES": ("max_batch_bytes", _whole_number),
    "COLLAPSE_REPEATS": ("collapse_repeats", _seconds),
}
#: Variables that are not one option each: ``credentials`` is made of two, and the level is the
#: handler's, not a constructor option.
USER, PASSWORD, LEVEL = "USER", "PASSWORD", "LEVEL"
VARIABLES = (*OPTIONS, USER, PASSWORD, LEVEL)


def handler_from_env(
    factory: Callable[..., _Made],
    env_prefix: str,
    overrides: Dict[str, Any],
    environ: Optional[Mapping[str, str]] = None,
) -> _Made:
    """``factory(**options)`` with the options the environment gives, ``overrides`` winning.

    ``factory`` is the handler class (or a subclass); keyword arguments a dictConfig entry
    passes arrive as ``overrides``.
    """
    if not isinstance(env_prefix, str) or not env_prefix:
        raise ValueError(
            f"env_prefix must be a non-empty str such as 'EX_LOG_', not {env_prefix!r}"
        )
    found = _variables(env_prefix, os.environ if environ is None else environ)
    # Given as keywords: the variables they would come from are not read (nor refused).
    for name, (option, _) in OPTIONS.items():
        if option in overrides:
            found.pop(name, None)
    if "credentials" in overrides:
        found.pop(USER, None)
        found.pop(PASSWORD, None)
    options, sources = _options(env_prefix, found)
    level = _level(env_prefix + LEVEL, found[LEVEL]) if LEVEL in found else None
    if "url" not in options and "url" not in overrides and "host" not in overrides:
        raise ValueError(
            f"{env_prefix}URL is not set: ExHTTPHandler.from_env() needs the log server's URL"
            f" there, e.g. {env_prefix}URL=https://logs.example/sink/KEY/myapp (or pass url=)"
        )
    for name in overrides:
        sources.pop(name, None)
    options.update(overrides)
    try:
        handler = factory(**options)
    except (TypeError, ValueError) as exc:
        if type(exc) not in (TypeError, ValueError):
            raise
        raise type(exc)(_with_source(str(exc), sources)) from None
    if level is not None:
        handler.setLevel(level)
    return handler


def _variables(env_prefix: str, environ: Mapping[str, str]) -> Dict[str, str]:
    """The variables with the prefix, by the rest of their name; empty ones count as unset.

    A variable with the prefix that is none of ours is refused, naming the closest: a typo
    (``EX_LOG_BATCHSIZE``) would otherwise leave the default in place without a word.
    """
    found = {
        name[len(env_prefix):]: value
        for name, value in environ.items()
        if name.startswith(env_prefix) and value != ""
    }
    unknown = sorted(name for name in found if name not in VARIABLES)
    if unknown:
        raise ValueError(_unknown_message(env_prefix, unknown))
    return found


def _unknown_message(env_prefix: str, unknown: List[str]) -> str:
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name, VARIABLES, n=1)
        hint = f" (did you mean {env_prefix}{close[0]}?)" if close else ""
        described.append(f"{env_prefix}{name}{hint}")
    plural = "s" if len(unknown) > 1 else ""
    return (
        f"ExHTTPHandler.from_env() does not know the environment variable{plural}"
        f" {', '.join(described)}. It reads {', '.join(env_prefix + v for v in VARIABLES)}."
    )


def _options(env_prefix: str, found: Dict[str, str]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Constructor options from the variables, and which variable each came from."""
    options: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    for name, (option, convert) in OPTIONS.items():
        if name in found:
            variable = env_prefix + name
            options[option] = convert(variable, found[name])
            sources[option] = variable
    if USER in found or PASSWORD in found:
        missing = PASSWORD if USER in found else USER
        if missing not in found:
            raise ValueError(
                f"{env_prefix}{USER} and {env_prefix}{PASSWORD} go together (basic auth):"
                f" {env_prefix}{missing} is not set"
            )
        options["credentials"] = (found[USER], found[PASSWORD])
        sources["credentials"] = f"{env_prefix}{USER} and {env_prefix}{PASSWORD}"
    return options, sources


def _with_source(message: str, sources: Dict[str, str]) -> str:
    """The constructor's message, and the variable of the option it is about (its first word)."""
    for option, variable in sources.items():
        if message.startswith((f"{option} ", f"{option}:")):
            return f"{message} (from {variable})"
    return message
