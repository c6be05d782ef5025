"""Constructor arguments -> one validated, immutable ``Config``.

Every option is checked here, at configuration time, with an error that names the option and
what it accepts, so that nothing about the options can go wrong later inside ``emit()``. Values
arrive from code, ``dictConfig`` (JSON/YAML/TOML: lists where code would pass tuples) and
``fileConfig`` INI ``args``.
"""

from __future__ import annotations

import difflib
import inspect
import ipaddress
import math
import os
import re
import ssl
import threading
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)
from urllib.parse import unquote, urlsplit

from ._buffer import OVERFLOW_POLICIES
from ._mapping import program_name
from ._wire import WIRE_FORMATS

METHODS = ("GET", "POST")
#: The largest request body by default: far above any ordinary record or batch, below what
#: collectors refuse (Loki's and most proxies' defaults are a few MiB and more).
DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024
#: A body must hold at least one record with its fields: below this, nothing fits.
MIN_BATCH_BYTES = 1024
REDACTED = "***"

#: The largest value of a seconds option: a million seconds, about 11.6 days. Larger values
#: break the waits that use them: ``threading`` refuses timeouts above ``threading.TIMEOUT_MAX``
#: (OverflowError in the worker or in ``logging.shutdown()``; about 49.7 days on Windows), and
#: CPython's socket waits truncate a timeout above 2**31 ms (about 24.8 days) to a random,
#: possibly tiny one.
MAX_SECONDS = min(1_000_000.0, threading.TIMEOUT_MAX)


@dataclass(frozen=True)
class Config:
    """The handler's validated options. Its repr shows ``display_url`` and hides secrets."""

    url: str = field(repr=False)
    display_url: str  # the URL with secrets replaced by ***: for repr() and loss lines
    method: str
    prefix: str
    app_name: str
    wire_format: str
    batch_size: int
    #: Checked and kept for compatibility with 0.1; nothing waits for it: the worker sends as
    #: soon as it is free, so no record is held back for a batch to fill.
    flush_interval: float
    max_queue_size: int
    max_queue_bytes: int
    overflow: str
    timeout: float
    max_retry_time: float
    shutdown_timeout: float
    headers: Mapping[str, str] = field(repr=False)
    compress: bool
    verify: Union[bool, str]
    cert: Union[str, Tuple[str, str], None]
    credentials: Optional[Tuple[str, str]] = field(repr=False)
    context: Optional[ssl.SSLContext]
    spool_path: Optional[str] = None
    spool_max_bytes: int = 128 * 1024 * 1024
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    collapse_repeats: Optional[float] = None


#: The enrichment fields' prefix of the original ex_loghandlers 0.1, and the default.
ORIGINAL_PREFIX = "_ex_"
#: Texts meant as a flag (from a configuration file), never as 0.1's prefix in ``secure``'s place.
FLAG_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})


def build_config(
    host: Optional[str],
    url: str,
    method: str,
    secure: Any,
    credentials: Any,
    context: Any,
    options: Dict[str, Any],
) -> Tuple[Config, List[str]]:
    """The validated options, and the warnings to give about them (what is ignored, what is
    sent in clear text)."""
    context = _context(context)
    if isinstance(secure, str) and secure:  # ExHTTPHandler(host, url, method, prefix), as in 0.1
        if secure.strip().lower() in FLAG_WORDS or options["prefix"] != ORIGINAL_PREFIX:
            raise TypeError(
                f"secure must be True or False, not {secure!r} (a string there is the prefix,"
                " as in ex_loghandlers 0.1's ExHTTPHandler(host, url, method, prefix))"
            )
        options = {**options, "prefix": secure}
        secure = False
    use_https = _truthy("secure", secure)
    if host is not None and not use_https and context is not None:
        # The stdlib's HTTPHandler refuses this too ("context parameter only makes sense with
        # secure=True").
        raise ValueError(
            "context is used only for https: pass secure=True with it, as the stdlib's"
            " HTTPHandler requires (or give a full https:// url without host)"
        )
    full_url = target_url(host, url, use_https)
    if context is not None and options["cert"] is not None:
        raise ValueError(
            "cert cannot be combined with context: load the client certificate into the context"
            " (context.load_cert_chain(certfile, keyfile)), or pass cert without context"
        )
    wire_format = _choice("wire_format", options["wire_format"], WIRE_FORMATS)
    given_credentials = _credentials(credentials)
    in_url = url_credentials(full_url)
    config = Config(
        url=full_url,
        display_url=display_url(full_url),
        method=checked_method(method, wire_format, _flag("compress", options["compress"])),
        prefix=_text("prefix", options["prefix"]),
        app_name=_app_name(options["app_name"], full_url),
        wire_format=wire_format,
        batch_size=_count("batch_size", options["batch_size"]),
        flush_interval=_seconds("flush_interval", options["flush_interval"]),
        max_queue_size=_count("max_queue_size", options["max_queue_size"]),
        max_queue_bytes=_count("max_queue_bytes", options["max_queue_bytes"]),
        overflow=_choice("overflow", options["overflow"], OVERFLOW_POLICIES),
        timeout=_seconds("timeout", options["timeout"], positive=True),
        max_retry_time=_seconds("max_retry_time", options["max_retry_time"]),
        shutdown_timeout=_seconds("shutdown_timeout", options["shutdown_timeout"]),
        headers=_headers(options["headers"]),
        compress=_flag("compress", options["compress"]),
        verify=_verify(options["verify"]),
        cert=_cert(options["cert"]),
        # As requests does: a user and password in the url are basic auth, credentials= wins.
        credentials=given_credentials or in_url,
        context=context,
        spool_path=_spool_path(options.get("spool_path")),
        spool_max_bytes=_count("spool_max_bytes", options.get("spool_max_bytes", 128 << 20)),
        max_batch_bytes=_max_batch_bytes(options.get("max_batch_bytes", DEFAULT_MAX_BATCH_BYTES)),
        collapse_repeats=_optional_seconds("collapse_repeats", options.get("collapse_repeats")),
    )
    notices = _notices(
        config,
        host_given=host is not None,
        ignored_on_http=[
            name
            for name, given in (
                ("secure", host is None and use_https),  # with host, secure made the url https
                ("context", context is not None),
                ("cert", options["cert"] is not None),
            )
            if given
        ],
        both_credentials=given_credentials is not None and in_url is not None,
        credentials_from_url=given_credentials is None and in_url is not None,
    )
    return config, notices


def _notices(
    config: Config,
    host_given: bool,
    ignored_on_http: List[str],
    both_credentials: bool,
    credentials_from_url: bool,
) -> List[str]:
    """Warnings, each saying what is ignored or exposed, and what to do."""
    notices = []
    plain_http = urlsplit(config.url).scheme == "http"
    if ignored_on_http and plain_http:
        names = " and ".join(f"{name}=" for name in ignored_on_http)
        remedy = "pass secure=True" if host_given else "give an https:// url"
        notices.append(
            f"ExHTTPHandler ignores {names}: {'it is' if len(ignored_on_http) == 1 else 'they are'}"
            f" for https, and the url {config.display_url} is http://. To use TLS, {remedy};"
            f" otherwise leave {names} out."
        )
    if both_credentials:
        notices.append(
            f"ExHTTPHandler ignores the user and password in the url {config.display_url}:"
            " credentials= is used instead. Keep only one of them."
        )
    if config.credentials is not None and plain_http:
        source = " (the user and password of the url)" if credentials_from_url else ""
        remedy = "secure=True" if host_given else "an https:// url"
        notices.append(
            f"ExHTTPHandler sends credentials in clear text over http:// to"
            f" {config.display_url}{source}; use https ({remedy})"
        )
    return notices


#: Keys of a handler's dictConfig entry that dictConfig reads itself; a misspelt one reaches the
#: constructor as an unknown keyword.
DICTCONFIG_KEYS = ("class", "level", "formatter", "filters")


def check_option_names(class_name: str, init: Callable[..., Any], given: Iterable[str]) -> None:
    """Refuse keywords ``init`` does not take, naming them and the closest option.

    dictConfig passes each key of a handler's entry it does not read itself as a keyword, so a
    typo there would otherwise read "__init__() got an unexpected keyword argument". An
    ``__init__`` that takes ``**kwargs`` (a subclass's) decides for itself.
    """
    parameters = list(inspect.signature(init).parameters.values())[1:]  # after self
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    names = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [name for name in given if name not in names]
    if unknown:
        options = [name for name in names if not name.startswith("_")]
        raise TypeError(unknown_options_message(class_name, unknown, options))


def unknown_options_message(
    class_name: str, unknown: Sequence[str], options: Sequence[str]
) -> str:
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name, [*options, *DICTCONFIG_KEYS], n=1)
        if not close:
            described.append(repr(name))
        elif close[0] in DICTCONFIG_KEYS:
            described.append(
                f"{name!r} (did you mean {close[0]!r}, a key of the handler's dictConfig entry?)"
            )
        else:
            described.append(f"{name!r} (did you mean {close[0]!r}?)")
    plural = "s" if len(unknown) > 1 else ""
    return (
        f"{class_name} has no option{plural} {', '.join(described)}. Its options are"
        f" {', '.join(options)}; the Options table of the README says what each accepts."
    )


def target_url(host: Optional[str], url: str, secure: bool) -> str:
    """The stdlib's ``host`` + ``url`` (+ ``secure``), or a full URL on its own."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str (a path or a full URL), not {type(url).__name__}")
    _check_characters(url)
    if host is None:
        try:
            parts = urlsplit(url)
        except ValueError:  # an unclosed '[', or what is in brackets is not an IPv6 address
            raise ValueError(
                "url must be a full http:// or https:// URL; an IPv6 address goes in brackets:"
                " 'http://[::1]:8080/path'"
            ) from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "url must be a full http:// or https:// URL when host is not given"
                f" (or give host='server:port' and a path), not {display_url(url)!r}"
            )
        if "@" in parts.path or "@" in parts.fragment:
            raise _mistyped_user(url)
        try:
            check_server("url", parts.netloc.rpartition("@")[2], display_url(url))
        except ValueError:
            if "@" in parts.query:  # the "port" may be the start of a password
                raise _mistyped_user(url) from None
            raise
        return url
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be 'server' or 'server:port', not {host!r}")
    if "/" in host:
        # Only the server is shown: the rest may hold a password or an API key.
        server = host.rpartition("://")[2].partition("/")[0].rpartition("@")[2]
        raise ValueError(
            f"host must be 'server' or 'server:port' (here {server!r}), without a scheme or a"
            " path: the path goes in url, or give the full URL as url without host"
        )
    if "@" in host:
        raise ValueError(
            "host must be 'server' or 'server:port', without a user or password:"
            " pass credentials=(user, password)"
        )
    check_server("host", host)
    if url and not url.startswith("/"):
        raise ValueError(
            f"url must be a path starting with '/' when host is given, not {display_url(url)!r}"
        )
    # An empty path is the stdlib's "/" (http.client sends "/" for an empty request target).
    return f"{'https' if secure else 'http'}://{host}{url or '/'}"


def _mistyped_user(url: str) -> ValueError:
    return ValueError(
        "url: a user or password that holds '/', '?' or '#' must be percent-encoded"
        " (%2F, %3F, %23), or given as credentials=(user, password): as typed, the server's"
        f" name ends at the first of them, in {display_url(url)!r}"
    )


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
#: A DNS name or an IPv4 address: labels of letters (any script), digits, '-' and '_'.
_SERVER_NAME = re.compile(r"[\w-]+(?:\.[\w-]+)*\.?")
_ZONE_ID = re.compile(r"(?:25)?[\w.~-]+")  # after '%', RFC 6874: [fe80::1%25eth0]
_PORT = re.compile(r"[0-9]{1,5}")


def _check_characters(url: str) -> None:
    """No control character, no surrounding whitespace: urlsplit would silently drop some."""
    bad = _CONTROL_CHARACTER.search(url)
    if bad is None and url == url.strip():
        return
    where = f"{bad.group()!r} at position {bad.start()}" if bad else "whitespace at an end"
    raise ValueError(
        f"url must not contain control characters or begin or end with whitespace; it has"
        f" {where} (a newline read from a file or an environment variable?)"
    )


def check_server(option: str, server: str, shown: Optional[str] = None) -> None:
    """Refuse a server (``name``, ``name:port``, ``[IPv6]:port``) no connection could reach.

    Caught here, a bad port or a space in the name says so; caught at run time, it is retried
    as "connection failed" until the deadline. ``shown``: the URL the server is part of.
    """
    where = f", in {shown}" if shown else ""
    brackets = "an IPv6 address goes in brackets, '[::1]:8080'"
    if server.startswith("["):
        address, bracket, rest = server[1:].partition("]")
        if not bracket:
            raise ValueError(f"{option}: {server!r} has no closing ']' ({brackets}){where}")
        ip, percent, zone = address.partition("%")
        if not _is_ipv6(ip) or (percent and not _ZONE_ID.fullmatch(zone)):
            raise ValueError(f"{option}: [{address}] is not an IPv6 address{where}")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{option}: only ':port' may follow ']', not {rest!r}{where}")
        port = rest[1:]
    else:
        name, _, port = server.partition(":")
        if ":" in port:
            raise ValueError(f"{option}: {brackets}, not {server!r}{where}")
        if not _SERVER_NAME.fullmatch(name):
            raise ValueError(
                f"{option}: {name!r} is not a server name or IP address (letters, digits, '-',"
                f" '_' and dots; {brackets}){where}"
            )
    # An empty port ('server:') is the scheme's default, for http.client and urllib3 alike.
    if port and not (_PORT.fullmatch(port) and 1 <= int(port) <= 65535):
        raise ValueError(
            f"{option}: the port must be a whole number from 1 to 65535, not {port!r}{where}"
        )


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def display_url(url: str) -> str:
    """``url`` as typed, without what may be secret: user info, query, and the key of
    ``/sink/<key>/``. (``localhost:5000/sink/...`` stays so: its "scheme" is ``localhost``.)

    In a URL whose server ``urlsplit`` reads, user info is what its host part holds before an
    ``@``. Otherwise it is everything up to the last ``@`` after the scheme and its slashes,
    however mistyped (``https//``, ``http:/``) and whatever the password holds (a ``/``, ``#``
    or ``?`` ends the host part where ``urlsplit`` reads it): an ``@`` in the query of such a
    URL hides its server too, rather than ever showing a password."""
    try:
        typed = url.strip()
        if not _server_read_whole(typed):
            lead = _SCHEME_AND_SLASHES.match(typed)
            start = lead.end() if lead else 0
            at = typed.rfind("@")
            if at >= start:
                typed = typed[:start] + typed[at + 1:]
        parts = urlsplit(typed)
        segments = parts.path.split("/")
        for i, segment in enumerate(segments[:-1]):
            if segment == "sink" and i + 1 < len(segments) and segments[i + 1]:
                segments[i + 1] = REDACTED
        query = f"?{REDACTED}" if parts.query else ""
        origin = f"{parts.scheme}:" if parts.scheme else ""
        if parts.netloc or typed[len(origin):].startswith("//"):
            origin += f"//{parts.netloc.rpartition('@')[2]}"
        return f"{origin}{'/'.join(segments)}{query}"
    except Exception:
        return "<url>"


def _server_read_whole(url: str) -> bool:
    """``urlsplit`` finds a server in ``url`` that could be one, and no ``@`` after it but in
    the query: the user info is all in its host part."""
    parts = urlsplit(url)
    if not parts.netloc or "@" in parts.path or "@" in parts.fragment:
        return False
    try:
        check_server("url", parts.netloc.rpartition("@")[2])
    except ValueError:
        return False
    return True


#: A scheme and the slashes after it, even mistyped (``https//``, ``http:/``, ``http:///``).
_SCHEME_AND_SLASHES = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:?/+")


def url_credentials(url: str) -> Optional[Tuple[str, str]]:
    """The percent-decoded ``user:password@`` of ``url``, as requests reads it, or None."""
    userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    if not at or not (user or password):
        return None
    return (unquote(user), unquote(password))


def sink_app_name(url: str) -> Optional[str]:
    """The ``<app_name>`` of a Logy ``/sink/<api_key>/<app_name>`` URL."""
    segments = urlsplit(url).path.split("/")
    for i, segment in enumerate(segments):
        if segment == "sink" and len(segments) == i + 3 and segments[i + 2]:
            return unquote(segments[i + 2])
    return None


def checked_method(method: Any, wire_format: str, compress: bool) -> str:
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    upper = method.upper()
    if upper == "GET" and wire_format != "form":
        raise ValueError(f"method 'GET' works only with wire_format 'form', not {wire_format!r}")
    if upper == "GET" and compress:
        raise ValueError("method 'GET' sends no body to compress: use compress=False with it")
    return upper


def _app_name(value: Any, url: str) -> str:
    if value is None:
        return sink_app_name(url) or program_name()
    return _text("app_name", value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def _truthy(name: str, value: Any) -> bool:
    """The stdlib's reading of a flag it only tests for truth (``secure``: any true value)."""
    try:
        return bool(value)
    except Exception:
        raise TypeError(f"{name} must be True or False, not {type(value).__name__}") from None


def _choice(name: str, value: Any, accepted: Tuple[str, ...]) -> str:
    if value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, accepted))}, not {value!r}")
    return str(value)


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
    return int(value)


def _seconds(name: str, value: Any, positive: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
    ):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
    if value < 0 or (positive and value == 0) or value > MAX_SECONDS:
        low = "more than 0 and" if positive else "0 or more, and"
        raise ValueError(
            f"{name} must be {low} at most {MAX_SECONDS:.0f} seconds (about"
            f" {MAX_SECONDS / 86400:.1f} days), not {value!r}"
        )
    return float(value)


def _optional_seconds(name: str, value: Any) -> Optional[float]:
    """None (off), or seconds as ``_seconds`` takes them, more than 0."""
    if value is None:
        return None
    try:
        return _seconds(name, value, positive=True)
    except ValueError as exc:
        raise ValueError(f"{exc} (or None, to turn it off)") from None


#: An HTTP header's name (a token, RFC 9110), and what its value may not hold: what would end
#: the header or the request, and what HTTP/1.1 cannot carry (its headers are Latin-1).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_NOT_IN_A_HEADER = re.compile(r"[\r\n\x00]|[^\x00-\xff]")


def _headers(value: Any) -> Mapping[str, str]:
    """Checked here, not at the first request, where every record would fail: a name that is
    not a token, a value with a line break or a character beyond Latin-1. The value is never
    shown: it may be a secret."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError("headers must be a dict of str to str, e.g. {'Authorization': 'Bearer …'}")
    for name, text in value.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(
                f"headers: {name!r} is not a header name (letters, digits and !#$%&'*+-.^_`|~)"
            )
        if _NOT_IN_A_HEADER.search(text):
            raise ValueError(
                f"headers: the value of {name!r} holds a line break, a NUL or a character"
                " beyond Latin-1, which HTTP headers cannot carry (percent-encode it, or"
                " base64 it, as the server expects)"
            )
    return dict(value)


def _pair(name: str, value: Any, example: str) -> Tuple[str, str]:
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, str) for v in value)
    ):
        return (value[0], value[1])
    raise TypeError(f"{name} must be None or a pair of str {example}")


def _credentials(value: Any) -> Optional[Tuple[str, str]]:
    """The stdlib's ``credentials``: a ``(user, password)`` pair; any false value means none.

    The stdlib formats the pair with ``'%s:%s'``, so a number (a PIN from YAML) is its digits;
    anything else there (None, bytes) would be sent as its repr, so it is refused instead.
    """
    if not value:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        user, password = value
        if all(isinstance(v, str) or _is_whole_number(v) for v in (user, password)):
            return (str(user), str(password))
    raise TypeError(
        "credentials must be None or a (user, password) pair of str (a list from JSON works too)"
    )


def _is_whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _cert(value: Any) -> Union[str, Tuple[str, str], None]:
    if value is None:
        return None
    example = "(cert_file, key_file), or a path to a PEM file"
    cert: Union[str, Tuple[str, str]] = (
        value if isinstance(value, str) else _pair("cert", value, example)
    )
    for path in (cert,) if isinstance(cert, str) else cert:
        if not os.path.isfile(path):
            raise ValueError(
                f"cert must be the path of a PEM file with the client certificate (and its key),"
                f" or a (cert_file, key_file) pair of paths; no file at {path!r}"
            )
    return cert


def _verify(value: Any) -> Union[bool, str]:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value:
        if not os.path.exists(value):
            raise ValueError(f"verify must be True, False or the path of a CA bundle; "
                             f"no file or directory at {value!r}")
        return value
    raise TypeError(f"verify must be True, False or the path of a CA bundle, not {value!r}")


def _max_batch_bytes(value: Any) -> int:
    count = _count("max_batch_bytes", value)
    if count < MIN_BATCH_BYTES:
        raise ValueError(
            f"max_batch_bytes must be at least {MIN_BATCH_BYTES} (bytes of a request body),"
            f" not {value!r}"
        )
    return count


def _spool_path(value: Any) -> Optional[str]:
    """A file path (its directory is made when the spool opens), ``~`` expanded."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip() or value.endswith(("/", os.sep)):
        raise ValueError(
            f"spool_path must be None or the path of a file (e.g. '/var/spool/myapp/logs'),"
            f" not {value!r}"
        )
    return os.path.abspath(os.path.expanduser(value))


def _context(value: Any) -> Optional[ssl.SSLContext]:
    if value is None or isinstance(value, ssl.SSLContext):
        return value
    raise TypeError(f"context must be None or an ssl.SSLContext, not {type(value).__name__}")
