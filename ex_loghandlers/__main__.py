"""``ex-loghandlers`` (or ``python -m ex_loghandlers``): send records, check a server, look after
a spool, from a shell, a cron job or a deployment script.

    ex-loghandlers send URL [MESSAGE ...]       each message a record; none: one per stdin line
    ex-loghandlers check URL                    one test record, then a verdict in plain words
    ex-loghandlers spool show PATH [--json]     what a spool holds
    ex-loghandlers spool send PATH URL          deliver what a spool holds

``python -m ex_loghandlers URL [MESSAGE ...]`` (no command) is ``send``, as in 0.2. Every record
goes through an ``ExHTTPHandler``, so the command line tests the very path an application's
records take. ``--timeout`` bounds delivery: the handler's flush and its close share it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import logging
import math
import os
import re
import ssl
import sys
import time
import warnings
from dataclasses import asdict
from typing import Any, Callable, Dict, NoReturn, Optional, Sequence, TextIO, Tuple
from urllib.parse import urlsplit

from urllib3.exceptions import InsecureRequestWarning

from . import __version__
from ._check import OK, verdict
from ._config import MAX_SECONDS, display_url
from ._env import DEFAULT_ENV_PREFIX, PASSWORD
from ._handler import ExHTTPHandler
from ._queued import SPEEDUPS
from ._spool_file import inspect, spools_in
from ._stats import SHUTDOWN_DEADLINE
from ._wire import WIRE_FORMATS

#: Where ``--user USER`` (without ``:PASSWORD``) finds the password: no prompt, so a cron job or
#: a script never hangs, and the password is not in ``ps`` output or the shell's history.
PASSWORD_VARIABLE = DEFAULT_ENV_PREFIX + PASSWORD
#: Seconds one HTTP request may take, at most (less when ``--timeout`` is shorter).
REQUEST_TIMEOUT = 5.0
#: ``check`` gives its verdict once this many retries failed alike (the handler makes its first
#: retries at once, so a refused connection is known within milliseconds), or at ``--timeout``.
RETRIES_BEFORE_VERDICT = 5
#: How often ``check`` looks at the handler's stats while it waits for an outcome.
CHECK_POLL = 0.05
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
LOGGER_NAME = "ex_loghandlers.cli"
CHECK_MESSAGE = "ex_loghandlers check: a test record, nothing to act on"
COMMANDS = ("send", "check", "spool")

Command = Callable[[argparse.Namespace, argparse.ArgumentParser], int]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in (*COMMANDS, "-h", "--help", "--version"):
        args.insert(0, "send")  # python -m ex_loghandlers URL [MESSAGE ...], as in 0.2
    parser = build_parser(_prog())
    if args[:1] == ["send"]:
        # Messages may come after options too ("URL --level ERROR 'disk full'"): parse_args
        # would take the positionals in one go and refuse the later ones.
        send: argparse.ArgumentParser = parser.get_default("send_parser")
        options = send.parse_intermixed_args(args[1:])
    else:
        options = parser.parse_args(args)
    options.prog = parser.prog  # messages name the program, not "PROG send"
    command: Command = options.command
    with warnings.catch_warnings():
        if getattr(options, "insecure", False):  # asked for: no warning on every request
            warnings.simplefilter("ignore", InsecureRequestWarning)
        return command(options, options.parser)


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "ex-loghandlers" if name.startswith("ex-loghandlers") else "python -m ex_loghandlers"


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Send log records to a log server, check one, or deliver a spool.",
        epilog=f"'{prog} URL [MESSAGE ...]' without a command is 'send'.",
    )
    built = "C speedups" if SPEEDUPS else "pure Python"
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} ({built})")
    commands = parser.add_subparsers(metavar="COMMAND", required=True)

    send = _command(
        commands, "send", _send,
        help="send each MESSAGE as a record (none: one per line of standard input)",
        description="Send each MESSAGE as a log record; without messages, each non-empty line"
        " of standard input, as it comes (like logger(1)). The exit status is 0 only when"
        " every record was delivered.",
    )
    parser.set_defaults(send_parser=send)
    send.add_argument("url", metavar="URL", help="e.g. http://localhost:5000/sink/TEST/myapp")
    send.add_argument("message", metavar="MESSAGE", nargs="*")
    send.add_argument("--level", type=_level, default=logging.INFO,
                      help="level name or number (default INFO)")
    _connection_options(send, 10.0, "seconds the run may take once the messages are read")

    check = _command(
        commands, "check", _check,
        help="send one test record and say in plain words what the server made of it",
        description="Send one test record and say what the server made of it. Exit status:"
        " 0 ok, 3 wrong API key or credentials, 4 no such path, 5 not a Logy sink (or not"
        " for this --wire-format), 6 unreachable, 7 TLS problem, 8 server error, 1 anything"
        " else, 2 a usage error.",
    )
    check.add_argument("url", metavar="URL", help="e.g. http://localhost:5000/sink/TEST/myapp")
    _connection_options(check, 10.0, "seconds to wait for a verdict")

    spool = commands.add_parser(
        "spool", help="look after the records a handler with spool_path= left on disk",
        description="Look after the records a handler with spool_path= left on disk.",
    )
    spool_commands = spool.add_subparsers(metavar="COMMAND", required=True)
    show = _command(spool_commands, "show", _spool_show,
                    help="what the spool holds (files, records, oldest)")
    show.add_argument("path", metavar="PATH", help="the handler's spool_path")
    show.add_argument("--json", action="store_true", help="one JSON object")
    spool_send = _command(
        spool_commands, "send", _spool_send,
        help="deliver what processes that are gone left in the spool, then exit",
    )
    spool_send.add_argument("path", metavar="PATH", help="the handler's spool_path")
    spool_send.add_argument("url", metavar="URL", help="full URL of the log server")
    _connection_options(spool_send, 60.0, "seconds delivery may take, all told")
    return parser


def _command(
    commands: Any, name: str, run: Command, **kwargs: Any
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, **kwargs)
    parser.set_defaults(command=run, parser=parser)
    return parser


def _connection_options(parser: argparse.ArgumentParser, timeout: float, meaning: str) -> None:
    parser.add_argument("--wire-format", choices=WIRE_FORMATS, default="form",
                        help="how records are encoded (default form: a Logy sink)")
    parser.add_argument("--app", metavar="NAME",
                        help="the app name sent with each record (default: from a /sink/ URL)")
    parser.add_argument("--header", metavar="NAME:VALUE", type=_header, action="append",
                        default=[], help="an HTTP header to send (repeatable)")
    parser.add_argument(
        "--user", metavar="USER[:PASSWORD]", type=_user,
        help=f"basic auth; without :PASSWORD, the password is read from ${PASSWORD_VARIABLE}",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true",
                     help="do not verify the server's TLS certificate")
    tls.add_argument("--ca-bundle", metavar="PATH", type=_existing_path,
                     help="CA certificates (a PEM file or a directory) to verify the server with")
    parser.add_argument("--timeout", metavar="SECONDS", type=_seconds, default=timeout,
                        help=f"{meaning} (default {timeout:g})")


class _Parser(argparse.ArgumentParser):
    """Usage errors that never repeat a secret the user typed: argparse quotes a value it
    refuses (a URL given where --timeout wants seconds) and lists the arguments it does not
    know (``--user bob:pw`` after ``spool show``). Its subcommands' parsers are of this class
    too (``add_subparsers`` makes them of the parent's)."""

    def error(self, message: str) -> NoReturn:
        super().error(_without_secrets(message))


_UNRECOGNIZED = "unrecognized arguments: "
#: What argparse quotes in its messages: a value it refused, a choice it did not know.
_QUOTED_VALUE = re.compile(r"'([^']*)'")
#: Options whose value is secret, or may be: all of it is hidden.
_SECRET_OPTIONS = ("--user", "--header")


def _without_secrets(message: str) -> str:
    head, unrecognized, rest = message.partition(_UNRECOGNIZED)
    head = _QUOTED_VALUE.sub(lambda m: repr(_shown(m.group(1))), head)
    if not unrecognized:
        return head
    shown: list[str] = []
    hiding = False  # the words of a secret option's value (joined with spaces by argparse)
    for token in rest.split(" "):
        name = token.partition("=")[0]
        if token.startswith("-"):
            hiding = name in _SECRET_OPTIONS
            if hiding and "=" in token:
                token = f"{name}=***"
        elif hiding:
            if shown[-1].endswith("***"):
                continue
            token = "***"
        else:
            token = _shown(token)
        shown.append(token)
    return head + unrecognized + " ".join(shown)


def _shown(value: str) -> str:
    """A value as a message may show it: a URL (or what may be one) without its secrets."""
    if "//" in value or "/sink/" in value or "@" in value:
        return display_url(value)
    return value


# -- reading the options ------------------------------------------------------------------------
# argparse puts "argument --flag: " before each of these messages. None repeats a value that may
# be secret (a header's, a password).


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds, e.g. 10 or 2.5, not {text!r}"
        ) from None
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(
            f"must be more than 0 and at most {MAX_SECONDS:.0f} seconds, not {text!r}"
        )
    return value


def _level(text: str) -> int:
    name = text.strip().upper()
    level = int(name) if name.isdigit() else logging.getLevelName(name)
    if not isinstance(level, int) or level < 1:  # logging logs nothing at NOTSET (0)
        raise argparse.ArgumentTypeError(
            f"must be DEBUG, INFO, WARNING, ERROR, CRITICAL or a number from 1, not {text!r}"
        )
    return level


def _header(text: str) -> Tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or any(c.isspace() for c in name.strip()):
        raise argparse.ArgumentTypeError(
            "must be NAME:VALUE, e.g. 'Authorization: Bearer abc' (a header name, a colon, its"
            " value)"
        )
    return (name.strip(), value.strip())


def _user(text: str) -> Tuple[str, str]:
    user, colon, password = text.partition(":")
    if not user:
        raise argparse.ArgumentTypeError("must be USER:PASSWORD or USER, with a user name")
    if colon:
        return (user, password)
    from_environment = os.environ.get(PASSWORD_VARIABLE)
    if not from_environment:
        raise argparse.ArgumentTypeError(
            f"no password: give USER:PASSWORD, or set {PASSWORD_VARIABLE} (there is no prompt)"
        )
    return (user, from_environment)


def _existing_path(text: str) -> str:
    """A file of CA certificates (PEM) that loads, or a directory of them."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no file or directory at {text!r}")
    if not os.path.isdir(text):
        try:
            ssl.create_default_context(cafile=text)
        except (ssl.SSLError, OSError, ValueError):
            raise argparse.ArgumentTypeError(
                f"{text!r} holds no CA certificate that loads (a PEM file is expected)"
            ) from None
    return text


def _handler(
    options: argparse.Namespace, parser: argparse.ArgumentParser, **extra: Any
) -> ExHTTPHandler:
    """The handler the options describe; a bad option is a usage error that names the flag."""
    url: str = options.url
    try:
        parts = urlsplit(url)
        full = parts.scheme in ("http", "https") and bool(parts.netloc)
    except ValueError:
        full = True  # the handler says what is wrong with it
    if not full:
        parser.error(
            "URL must be a full http:// or https:// URL, e.g."
            f" http://localhost:5000/sink/TEST/myapp, not {display_url(url)!r}"
        )
    settings: Dict[str, Any] = {
        "url": url,
        "wire_format": options.wire_format,
        "app_name": options.app,
        "headers": dict(options.header) or None,
        "credentials": options.user,
        "verify": False if options.insecure else options.ca_bundle or True,
        "timeout": min(REQUEST_TIMEOUT, options.timeout),
        **extra,
    }
    with warnings.catch_warnings(record=True) as notices:
        warnings.simplefilter("always")
        try:
            handler = ExHTTPHandler(**settings)
        except (TypeError, ValueError) as exc:
            parser.error(_as_typed(str(exc)))
    for notice in notices:  # credentials in clear text, for instance
        print(f"{options.prog}: warning: {notice.message}", file=sys.stderr)
    return handler


def _as_typed(message: str) -> str:
    """A constructor's message about an option, naming what the user typed instead."""
    for option, typed in (("url", "URL"), ("spool_path", "PATH")):
        if message.startswith((f"{option} ", f"{option}:")):
            return typed + message[len(option):]
    return message


def _logger(handler: ExHTTPHandler, level: int) -> logging.Logger:
    """A logger for the handler alone, outside logging's registry: nothing global changes."""
    logger = logging.Logger(LOGGER_NAME, level)
    logger.propagate = False
    logger.addHandler(handler)
    return logger


# -- the commands -------------------------------------------------------------------------------


def _send(options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # flush() without a timeout waits at most shutdown_timeout, and close() right after it gets
    # what is left of the same: --timeout is the whole time, not twice it.
    handler = _handler(options, parser, shutdown_timeout=options.timeout)
    logger = _logger(handler, options.level)
    interrupted = False
    try:
        if options.message:
            for message in options.message:
                logger.log(options.level, message)
        else:
            interrupted = _log_lines(sys.stdin, logger, options.level, options.prog)
        handler.flush()
    except KeyboardInterrupt:  # while it waits for the server: the report, as at any other end
        interrupted = True
    finally:
        handler.close()
    status = _report(handler, options)
    return INTERRUPTED if interrupted else status


def _log_lines(stream: Optional[TextIO], logger: logging.Logger, level: int, prog: str) -> bool:
    """Log each non-empty line as it comes; True if Ctrl-C ended the input (what was read is
    still delivered). Bytes that are not text in the stream's encoding are replaced, not fatal.
    """
    if stream is None:  # no standard input at all
        return False
    if stream.isatty():
        print(f"{prog}: reading messages from standard input, one per line; end with Ctrl-D",
              file=sys.stderr)
    encoding = getattr(stream, "encoding", None) or "utf-8"
    binary = getattr(stream, "buffer", None)
    lines: Any = binary if binary is not None else stream
    try:
        for line in lines:
            text = line.decode(encoding, "replace") if isinstance(line, bytes) else line
            text = text.rstrip("\r\n")
            if text:
                logger.log(level, text)
    except KeyboardInterrupt:
        return True
    return False


def _check(options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # shutdown_timeout=0: once the verdict is known, close() sends nothing more.
    handler = _handler(options, parser, shutdown_timeout=0.0, max_retry_time=options.timeout)
    deadline = time.monotonic() + options.timeout
    # The handler's own loss lines would only repeat, less plainly, what the verdict says.
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            _logger(handler, logging.INFO).info(CHECK_MESSAGE)
            _wait_for_an_outcome(handler, deadline)
            stats = handler.stats
        finally:
            handler.close()
    found = verdict(stats, options.url, options.wire_format, options.timeout)
    _out(found.words)
    return found.status


def _wait_for_an_outcome(handler: ExHTTPHandler, deadline: float) -> None:
    """Until the record is settled, the deadline, or enough retries failed alike to judge."""
    while not handler.flush(min(CHECK_POLL, max(0.0, deadline - time.monotonic()))):
        if time.monotonic() >= deadline or handler.stats.retried >= RETRIES_BEFORE_VERDICT:
            return


def _spool_path(options: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """PATH as the handler's ``spool_path``; a usage error for what cannot be one: a
    directory (naming the spools in it), or a path in a directory that does not exist."""
    path: str = options.path
    if os.path.isdir(path):
        bases = spools_in(path)
        found = f"; spools there: {', '.join(bases)}" if bases else ""
        parser.error(f"PATH: {_shown(path)} is a directory: give the handler's spool_path (its"
                     f" files are PATH.<pid>-<id>.db){found}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):  # a mistyped path: neither "0 records" nor a directory made
        swapped = " (PATH comes first, then URL)" if "://" in path else ""
        parser.error(f"PATH: no spool at {_shown(path)}: there is no directory"
                     f" {_shown(folder)}{swapped}")
    return path


def _spool_show(options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    path = _spool_path(options, parser)
    files = inspect(path)
    records = sum(f.records for f in files)
    oldest_times = [f.oldest for f in files if f.oldest is not None]
    oldest = _when(min(oldest_times)) if oldest_times else None
    if options.json:
        _out(json.dumps({
            "path": path, "files": len(files), "records": records,
            "bytes": sum(f.bytes for f in files), "oldest": oldest,
            "details": [asdict(f) for f in files],
        }))
        return 0
    _out(f"{records} records in {len(files)} file(s) for {path}"
          + (f"; oldest from {oldest}" if oldest else ""))
    for f in files:
        state = "in use by a running process" if f.owner_alive else "left by a process gone"
        detail = f"unreadable: {f.error}" if f.error else f"{f.records} records, {f.bytes} bytes"
        _out(f"  {f.path}: {detail} ({state})")
    return 0


def _spool_send(options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    handler = _handler(options, parser, spool_path=_spool_path(options, parser),
                       shutdown_timeout=options.timeout)
    try:
        handler.flush()  # and close() shares its time, as in _send
    finally:
        handler.close()
    return _report(handler, options)


def _out(line: str) -> None:
    """A line of the result on standard output. One that is closed (``| head -0``) is not an
    error of the command's: the exit status still says what happened."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        # Python would write what stays buffered again at exit, and fail there: let it go.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat()


def _report(handler: ExHTTPHandler, options: argparse.Namespace) -> int:
    """The counts on stdout; when something was not delivered, why, on stderr, and status 1."""
    stats, prog = handler.stats, options.prog
    _out(f"{stats.sent} sent, {stats.dropped} dropped, {stats.failed} failed"
          + (f", {stats.kept} kept on disk" if stats.kept else "")
          + f" to {handler.config.display_url}")
    if stats.sent == stats.emitted:
        return 0
    found = verdict(stats, options.url, options.wire_format, options.timeout)
    late = f"not delivered within --timeout {options.timeout:g} s"
    if found.status == OK:  # some records went, the rest were late
        print(f"{prog}: {late}", file=sys.stderr)
    elif stats.dropped_by_reason.get(SHUTDOWN_DEADLINE):
        print(f"{prog}: {late}: {found.words}", file=sys.stderr)
    else:
        print(f"{prog}: {found.words}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
