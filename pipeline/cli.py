"""The ``salesmart`` command.

Exit codes: 0 success (a file with rejected rows is a success); 2 unusable input, nothing
loaded; 1 anything else. Errors are one line on stderr, with a traceback only under
``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import re
import sys
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeAlias, cast

from common.functions import FUNCTIONS
from common.roles import ROLES
from common.wording import how_many
from pipeline import TARGETS, expand_targets
from pipeline.progress import OutputUntilReaderGone, counted, is_stdout, printable

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNUSABLE = 2
TARGET_CHOICES = (*TARGETS, "all")
# `generate` draws a bar from here on (~0.5 s of writing on a 2-core machine).
GENERATE_PROGRESS_MIN_ROWS = 200_000


class _UsageError(Exception):
    def __init__(self, parser: _Parser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 1, as for any other failure (exit 2
    is kept for unusable input files). Errors are raised first, for ``parse_command_line``
    to say what is wrong from the whole command line. An option is only its whole name:
    an abbreviation (``--tar``) that works today would break a script, or mean another
    option, once a later option shares its start."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self, message)

    def usage_exit(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


class CliError(Exception):
    """A one-line failure for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# -- commands ------------------------------------------------------------------------------
def _input_paths(names: Sequence[str]) -> list[Path]:
    """The CSV files named. ``Path("")`` is ``.``: an empty name would be reported as a
    folder the user never gave."""
    if "" in names:
        raise CliError("an empty file name was given", EXIT_UNUSABLE)
    return [Path(name) for name in names]


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipeline.csvsource import TransactionReader, UnusableInputError
    from pipeline.ingest import IngestResult, ingest_into
    from pipeline.runtime import cli_settings, enter_warehouses, require_bigquery_answers

    settings = cli_settings()
    results: list[IngestResult] = []
    paths = _input_paths(args.csv)
    try:
        # Every file is checked before anything starts or loads: exit 2 means nothing
        # loaded, also when the unusable file is not the first one.
        for path in paths:
            TransactionReader(path, settings.validation, settings.pii_key).check_whole_file()
        targets = expand_targets(args.target)
        with contextlib.ExitStack() as services:
            settings = enter_warehouses(services, settings, targets)
            if "bigquery" in targets and len(targets) > 1:
                # Asked first: found gone once PostgreSQL was loaded, the two stayed apart
                # until the file was loaded again.
                require_bigquery_answers(settings, "nothing loaded")
            for target in targets:
                for path in paths:
                    results.append(ingest_into(target, path, settings, progress=True))
                    _print_result(results[-1], args.json)
    except UnusableInputError as exc:
        if results:  # it changed or went away after the loads printed above: not "nothing"
            raise CliError(
                f"{exc} (found after {len(results)} load(s), printed above, had finished;"
                " the others were not made)"
            ) from exc
        raise CliError(str(exc), EXIT_UNUSABLE) from exc
    return EXIT_OK


def _print_result(result: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.as_dict()), flush=True)
    else:
        print(result.summary(), flush=True)


def cmd_transform(args: argparse.Namespace) -> int:
    from pipeline.progress import StatusLine
    from pipeline.runtime import cli_settings, enter_warehouses, require_bigquery_answers
    from pipeline.transform import run_dbt

    settings = cli_settings(with_secrets=False)  # dbt masks nothing: ids come masked
    targets = expand_targets(args.target)
    for done, target in enumerate(targets):
        # On a terminal, dbt's latest "N of M" step, as long as the build runs.
        with StatusLine() as status, contextlib.ExitStack() as services:

            def step(line: str, target: str = target) -> None:
                found = _DBT_STEP.search(line)
                if found:
                    status.show(f"dbt {target}: {found.group(0)}")

            try:
                warehouse = enter_warehouses(services, settings, [target])
                if target == "bigquery":
                    require_bigquery_answers(warehouse)
                result = run_dbt(target, warehouse, on_line=step)
            except Exception as exc:
                left = targets[done + 1 :]
                if not left:
                    raise
                # The DAG builds each warehouse on its own: say which one this did not.
                raise CliError(f"{_one_line(exc)}; {', '.join(left)} not built") from exc
        print(f"dbt build on {target}: ok ({result.summary()})", flush=True)
    return EXIT_OK


# A step of dbt's log ("12:00:01  3 of 24 START sql table model public.pg_sales ... [RUN]").
_DBT_STEP = re.compile(r"\b\d+ of \d+ \S.*")


def cmd_ingest_landing(args: argparse.Namespace) -> int:
    import dataclasses

    from pipeline.landing import ingest_landing
    from pipeline.runtime import cli_settings, enter_warehouses

    settings = cli_settings()
    if args.landing:
        settings = dataclasses.replace(settings, landing=args.landing)
    targets = expand_targets(args.target)
    with contextlib.ExitStack() as services:
        settings = enter_warehouses(services, settings, targets)
        results = ingest_landing(
            settings, targets, say=lambda line: print(printable(line), flush=True)
        )
    print(f"new loads: {len(results)} (one per new file and warehouse)", flush=True)
    return EXIT_OK


def cmd_check_marts(args: argparse.Namespace) -> int:
    from pipeline.checks import MartCheckError, check_marts, require_fresh
    from pipeline.runtime import cli_settings, enter_warehouses

    settings = cli_settings(with_secrets=False)  # reads the marts: no key needed
    targets = expand_targets(args.target)
    with contextlib.ExitStack() as services:
        settings = enter_warehouses(services, settings, targets)
        checks = check_marts(settings, targets)
    for check in checks:
        _print_result(check, args.json)
    try:
        require_fresh(checks)
    except MartCheckError as exc:
        raise CliError(str(exc)) from exc
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    from pipeline.migrate import migrate_database
    from pipeline.runtime import cli_settings, postgres_dsn

    settings = cli_settings(with_secrets=False)
    with postgres_dsn(settings, migrated=False) as dsn:  # what it applies is said below
        applied = migrate_database(dsn)
    print(f"migrations applied: {', '.join(map(str, applied)) or 'none (up to date)'}")
    return EXIT_OK


def _read_password(args: argparse.Namespace) -> str:
    try:
        if args.password_stdin or not sys.stdin.isatty():
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass("Password: ")
            if getpass.getpass("Repeat password: ") != password:
                raise CliError("the passwords do not match")
        # Bytes that are not UTF-8 arrive as surrogates (or fail to decode): bcrypt hashes
        # the UTF-8 bytes, and a login form could never send the same password.
        password.encode("utf-8")
    except EOFError:  # Ctrl-D at the prompt
        raise CliError("no password given") from None
    except UnicodeError:
        raise CliError("the password is not UTF-8 text") from None
    if not password:
        raise CliError("no password given")
    return password


def cmd_users(args: argparse.Namespace) -> int:
    from common.passwords import PasswordPolicyError
    from common.pg import connect
    from pipeline import users
    from pipeline.runtime import cli_settings, postgres_dsn

    settings = cli_settings(with_secrets=False)
    name = getattr(args, "name", None)
    if name is not None:  # a name no account may have is refused before any server starts
        try:
            users.check_name(name, getattr(args, "role", None))
        except users.UserError as exc:
            raise CliError(str(exc)) from exc
    with postgres_dsn(settings) as dsn:
        conn = connect(dsn)
        try:
            if args.users_command in ("add", "password"):
                # Asked for only once the name can take it (a taken name said so only after
                # the password had been typed twice).
                adding = args.users_command == "add"
                role = args.role if adding else None
                users.check_password_target(conn, args.name, role, new=adding)
                password = _read_password(args)
                if adding:
                    users.add_user(conn, args.name, password, args.role, settings.bcrypt_rounds)
                    print(f"user {args.name} added ({args.role})")
                else:
                    users.set_password(conn, args.name, password, settings.bcrypt_rounds)
                    print(f"password of {args.name} changed")
            elif args.users_command == "disable":
                users.disable_user(conn, args.name)
                print(f"user {args.name} disabled")
            elif args.users_command == "enable":
                users.enable_user(conn, args.name)
                print(f"user {args.name} enabled")
            else:
                listed = users.list_users(conn)
                if listed and sys.stdout.isatty():  # a script reading the lines gets no header
                    print("name\trole\tstate\tadded")
                for user in listed:
                    state = "disabled" if user.disabled else "active"
                    added = user.created_at.astimezone(UTC)  # not the database session's zone
                    print(f"{user.username}\t{user.role}\t{state}\t{added:%Y-%m-%d}")
                if not listed:  # on stderr: a script reading stdout still gets no lines
                    print("no users yet: add one with `salesmart users add`", file=sys.stderr)
        except (users.UserError, PasswordPolicyError) as exc:
            raise CliError(str(exc)) from exc
        finally:
            conn.close()
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from pipeline.generate import generate
    from pipeline.runtime import cli_settings

    if args.rows < 0:
        raise CliError("--rows must be >= 0")
    if not 0 <= args.invalid_share <= 1:
        raise CliError("--invalid-share must be between 0 and 1")
    if not args.out:  # Path("") is the current folder: ".: Is a directory"
        raise CliError("--out: an empty file name was given")
    path = Path(args.out)
    # Standard output (``-``, or ``/dev/stdout``, or the file it goes to) is written through
    # the descriptor the shell gave: reopening it would truncate a ``>>`` log, and a reader
    # that leaves (``| head``) ends the writing quietly.
    to_stdout = args.out == "-" or is_stdout(path)
    out: Path | TextIO = sys.stdout if to_stdout else path
    what = "standard output" if args.out == "-" else path.name
    with counted(args.rows, what, show=args.rows >= GENERATE_PROGRESS_MIN_ROWS) as advance:
        written = generate(
            out,
            args.rows,
            seed=args.seed,
            invalid_share=args.invalid_share,
            on_progress=advance,
            rules=cli_settings(with_secrets=False).validation,
        )
    if to_stdout:
        sys.stdout.flush()
    # Not into the CSV itself when that is stdout.
    summary = sys.stderr if to_stdout else sys.stdout
    where = "standard output" if args.out == "-" else printable(args.out)
    if written < args.rows:  # only a reader that left stops it early (``| head``)
        print(
            f"stopped after {written} of {how_many(args.rows, 'transaction')}:"
            f" the reader of {where} left",
            file=summary,
        )
    elif to_stdout and getattr(sys.stdout, "reader_gone", False):  # seen at the last flush
        print(
            f"wrote {how_many(written, 'transaction')} to {where},"
            " but its reader left before the end",
            file=summary,
        )
    else:
        print(f"wrote {how_many(written, 'transaction')} to {where}", file=summary)
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    from pipeline.stack import run_up

    return run_up(
        data=_input_paths(args.data) if args.data else None,
        extra_rows=args.rows,
        port_base=args.port_base,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from pipeline.stack import run_serve

    return run_serve(functions=args.function or list(FUNCTIONS), port_base=args.port_base)


# -- parser --------------------------------------------------------------------------------
# Each command's arguments, one function a command; ``build_parser`` lists them in the order
# ``--help`` shows them.
_Commands: TypeAlias = "argparse._SubParsersAction[_Parser]"


def _target_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--target", choices=TARGET_CHOICES, default="all", help=help_text)


def _port_base_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--port-base", type=int, default=8080, metavar="P", help=help_text)


def _add_up(sub: _Commands, debug: _Parser) -> None:
    up = sub.add_parser("up", help="start the whole local stack (Ctrl-C stops it)", parents=[debug])
    up.add_argument(
        "--data",
        action="append",
        metavar="CSV",
        help="load this file instead of data/transactions.csv (repeatable)",
    )
    up.add_argument(
        "--rows",
        type=int,
        default=0,
        metavar="N",
        help="also load N generated transactions (as generate writes them: ~2%% invalid,"
        " rejected with their reasons)",
    )
    _port_base_option(up, "functions listen on P..P+3 (default 8080)")
    up.set_defaults(handler=cmd_up)


def _add_ingest(sub: _Commands, debug: _Parser) -> None:
    ingest = sub.add_parser("ingest", help="validate and load transaction CSVs", parents=[debug])
    ingest.add_argument(
        "csv",
        nargs="+",
        metavar="CSV",
        help="transaction file(s): transaction_id,product,price,quantity,date",
    )
    _target_option(ingest, "where to load (default all: both warehouses, as up and transform)")
    ingest.add_argument(
        "--json", action="store_true", help="one JSON summary per file and warehouse"
    )
    ingest.set_defaults(handler=cmd_ingest)


def _add_transform(sub: _Commands, debug: _Parser) -> None:
    transform = sub.add_parser(
        "transform", help="dbt build on the chosen warehouse(s)", parents=[debug]
    )
    _target_option(transform, "which warehouse(s) (default all)")
    transform.set_defaults(handler=cmd_transform)


def _add_ingest_landing(sub: _Commands, debug: _Parser) -> None:
    landing = sub.add_parser(
        "ingest-landing",
        help="load the new files of the landing location (skips loaded ones)",
        parents=[debug],
    )
    landing.add_argument(
        "--landing",
        metavar="PATH",
        help="folder or gs://bucket/prefix (default: SALESMART_LANDING, else the config's"
        " data_lake.landing)",
    )
    _target_option(landing, "where to load (default all)")
    landing.set_defaults(handler=cmd_ingest_landing)


def _add_check_marts(sub: _Commands, debug: _Parser) -> None:
    check = sub.add_parser(
        "check-marts", help="fail when the marts do not match the raw area", parents=[debug]
    )
    _target_option(check, "which warehouse(s) (default all)")
    check.add_argument("--json", action="store_true", help="one JSON result per target")
    check.set_defaults(handler=cmd_check_marts)


def _add_serve(sub: _Commands, debug: _Parser) -> None:
    serve = sub.add_parser("serve", help="serve functions locally, one port each", parents=[debug])
    serve.add_argument(
        "--function",
        action="append",
        choices=FUNCTIONS,
        metavar="NAME",
        help=f"serve only this one (repeatable): {', '.join(FUNCTIONS)}; default all",
    )
    _port_base_option(
        serve, "token on P, trends_bq P+1, trends_pg P+2, dashboard P+3 (default 8080)"
    )
    serve.set_defaults(handler=cmd_serve)


def _add_users(sub: _Commands, debug: _Parser) -> _Commands:
    """``users`` and its actions; returns the actions' subparsers."""
    from common.passwords import MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS

    users = sub.add_parser("users", help="manage the functions' users", parents=[debug])
    users_sub = users.add_subparsers(dest="users_command", metavar="ACTION")
    add = users_sub.add_parser(
        "add", help="add a user (password from stdin or a prompt)", parents=[debug]
    )
    add.add_argument("name", help="the username")
    add.add_argument(
        "--role",
        choices=ROLES,
        required=True,
        help="carried in its tokens (both roles may use the trend APIs and the dashboard)",
    )
    stdin_help = (
        "read the password from the first line of stdin"
        f" ({MIN_PASSWORD_CHARS} characters to {MAX_PASSWORD_BYTES} bytes)"
    )
    add.add_argument("--password-stdin", action="store_true", help=stdin_help)
    users_sub.add_parser(
        "list",
        help="list users",
        description="One user a line, tab-separated: name, role, active or disabled, the day"
        " it was added (UTC). A terminal also gets a header line.",
        parents=[debug],
    )
    disable = users_sub.add_parser("disable", help="disable a user", parents=[debug])
    disable.add_argument(
        "name",
        help="the username (no more logins, and its dashboard sessions end at once; bearer"
        " tokens already issued run out with their lifetime)",
    )
    enable = users_sub.add_parser("enable", help="enable a disabled user again", parents=[debug])
    enable.add_argument("name", help="the username (a lockout by failed logins ends too)")
    new_password = users_sub.add_parser(
        "password",
        help="set a user's password (from stdin or a prompt)",
        parents=[debug],
    )
    new_password.add_argument(
        "name",
        help="the username (its dashboard sessions and any lockout by failed logins end at"
        " once; bearer tokens already issued run out with their lifetime)",
    )
    new_password.add_argument("--password-stdin", action="store_true", help=stdin_help)
    users.set_defaults(handler=cmd_users)
    return users_sub


def _add_generate(sub: _Commands, debug: _Parser) -> None:
    gen = sub.add_parser("generate", help="write synthetic transactions", parents=[debug])
    gen.add_argument("--rows", type=int, required=True, metavar="N", help="transactions to write")
    gen.add_argument(
        "--seed", type=int, default=0, metavar="S", help="same seed, same file (default 0)"
    )
    gen.add_argument(
        "--out", required=True, metavar="CSV", help="the file to write ('-': standard output)"
    )
    gen.add_argument(
        "--invalid-share",
        type=float,
        default=0.02,
        metavar="F",
        help="share of invalid rows (default 0.02)",
    )
    gen.set_defaults(handler=cmd_generate)


def _add_migrate(sub: _Commands, debug: _Parser) -> None:
    mig = sub.add_parser("migrate", help="apply database migrations", parents=[debug])
    mig.set_defaults(handler=cmd_migrate)


def build_parser() -> _Parser:
    parser = _Parser(
        prog="salesmart",
        description="Transaction CSVs to answers: ingest, transform, serve.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    # Also after the command (``salesmart ingest x.csv --debug``); SUPPRESS keeps the value
    # given before it when it is not repeated.
    debug = _Parser(add_help=False)
    debug.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )
    # Not required here: main() says which is missing only after unknown options, which
    # argparse would otherwise hide behind "the following arguments are required".
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_up(sub, debug)
    _add_ingest(sub, debug)
    _add_transform(sub, debug)
    _add_ingest_landing(sub, debug)
    _add_check_marts(sub, debug)
    _add_serve(sub, debug)
    users_sub = _add_users(sub, debug)
    _add_generate(sub, debug)
    _add_migrate(sub, debug)
    # The innermost parser a command line reached: its usage errors name it (and its --help).
    for command_parser in (*sub.choices.values(), *users_sub.choices.values()):
        command_parser.set_defaults(command_parser=command_parser)
    return parser


def parse_command_line(parser: _Parser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, with usage errors from the command's own parser: unknown
    options first (``salesmart ingest --bogus`` says so, not that a file is missing)."""
    given = list(sys.argv[1:] if argv is None else argv)
    try:
        args, unknown = parser.parse_known_args(given)
    except _UsageError as error:
        unknown = _unknown_options(error.parser, given)
        missing = error.message.startswith("the following arguments are required")
        error.parser.usage_exit(
            f"unrecognized arguments: {' '.join(unknown)}" if missing and unknown else error.message
        )
    reached: _Parser = getattr(args, "command_parser", parser)
    if unknown:
        reached.usage_exit(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        reached.usage_exit("the following arguments are required: COMMAND")
    if args.command == "users" and args.users_command is None:
        reached.usage_exit("the following arguments are required: ACTION")
    return args


def _unknown_options(parser: argparse.ArgumentParser, given: Sequence[str]) -> list[str]:
    """The option-like words that ``parser`` (the command reached) does not define."""
    known = parser._option_string_actions  # argparse's own table of option strings
    return [
        word
        for word in given
        if word.startswith("-")
        and word not in ("-", "--")
        and not re.fullmatch(r"-[0-9]*\.?[0-9]+", word)  # a negative number is a value
        and word.split("=", 1)[0] not in known
    ]


def _one_line(exc: BaseException) -> str:
    from common.config import ConfigError

    text = " ".join(str(exc).split())
    if isinstance(exc, CliError | ConfigError) and text:
        return text
    name = type(exc).__name__
    module = type(exc).__module__
    if module.startswith("psycopg2"):
        from pipeline.migrate import not_migrated_hint

        message = _pg_message(exc)
        if getattr(exc, "pgcode", None) == "42P01":
            message = not_migrated_hint(message)
        return "PostgreSQL error: " + message
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"  # a local file: not a service
    if isinstance(exc, ConnectionError | OSError | TimeoutError):
        return f"cannot reach a service: {text or name}"
    return f"{text or name}"


def _pg_message(exc: BaseException) -> str:
    """The server's own message, or libpq's first line (a failed connect)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if primary:
        return str(primary)
    first = str(exc).strip().splitlines()
    return " ".join(first[0].split()) if first else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    from common.process import stopped_by_signals

    args = parse_command_line(build_parser(), argv)
    stdout = sys.stdout
    if stdout is not None:
        sys.stdout = cast("TextIO", OutputUntilReaderGone(stdout))
    try:
        with stopped_by_signals():  # Ctrl-C or SIGTERM: what a command started is stopped
            code = int(args.handler(args))
    except KeyboardInterrupt as interrupt:
        left = f": {interrupt}" if str(interrupt) else ""  # what an interrupted load left
        print(f"salesmart: interrupted{left}", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:  # the traceback too; the exit code stays what it would be
            import traceback

            traceback.print_exc()
        code = exc.code if isinstance(exc, CliError) else EXIT_ERROR
        from pipeline.csvsource import UnusableInputError

        if isinstance(exc, UnusableInputError):
            code = EXIT_UNUSABLE
        print(f"salesmart: {printable(_one_line(exc))}", file=sys.stderr)
        return code
    finally:
        sys.stdout = stdout
    return code


if __name__ == "__main__":
    sys.exit(main())
