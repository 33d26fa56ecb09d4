"""The ``grantkeeper`` command: the Typer app, shared options, and the mapping of errors to exit codes.

Exit codes (DESIGN section 4): 0 the command did its work (failed refreshes are results, not errors),
1 an operational error (database unreachable, ...), 2 bad usage or input.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from grantkeeper import __version__
from grantkeeper.adapters.crypto import KeyringError
from grantkeeper.bootstrap import Runtime, build_runtime
from grantkeeper.config import Settings
from grantkeeper.core.errors import GrantkeeperError, InvalidInputError, MissingEncryptionKeyError
from grantkeeper.entrypoints.cli.output import err_console
from grantkeeper.logs import configure_logging
from grantkeeper.ports import SchemaOutdatedError

EXIT_OK = 0
EXIT_OPERATIONAL = 1
EXIT_USAGE = 2

log = logging.getLogger("grantkeeper.cli")

app = typer.Typer(
    name="grantkeeper",
    help="Keeps OAuth connections alive: refresh before expiry, warn before breaking, pause and reconnect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"grantkeeper {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Keeps OAuth connections alive: refresh before expiry, warn before breaking, pause and reconnect."""


JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
TenantOption = Annotated[str, typer.Option("--tenant", help="Tenant the command acts on.")]

P = ParamSpec("P")
R = TypeVar("R")


class CliError(Exception):
    """An error already worded for the user, with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = EXIT_USAGE) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(exit_code)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn every expected error into one clear line on stderr and a meaningful exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except CliError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except ValidationError as exc:
            raise fail(f"invalid configuration: {_settings_problem(exc)}") from None
        except SchemaOutdatedError as exc:
            raise fail(str(exc), EXIT_OPERATIONAL) from None
        except (InvalidInputError, KeyringError, MissingEncryptionKeyError) as exc:
            raise fail(str(exc)) from None
        except GrantkeeperError as exc:
            raise fail(str(exc)) from None
        except SQLAlchemyError as exc:
            log.debug("database error", exc_info=True)
            raise fail(
                f"database error: {type(exc).__name__}: {_first_line(exc)}", EXIT_OPERATIONAL
            ) from None
        except OSError as exc:
            raise fail(f"{type(exc).__name__}: {exc}", EXIT_OPERATIONAL) from None

    return wrapper


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def _settings_problem(exc: ValidationError) -> str:
    """Name the variable and the problem, never the value (it may be a secret)."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        problems.append(f"GRANTKEEPER_{field.upper()}: {error['msg']}")
    return "; ".join(problems)


def load_settings() -> Settings:
    settings = Settings()
    configure_logging(settings.log_level)
    return settings


@contextmanager
def runtime(settings: Settings | None = None) -> Iterator[Runtime]:
    """Open the configured database for one command and close it afterwards."""
    built = build_runtime(settings or load_settings())
    try:
        yield built
    finally:
        built.close()


def run_async(coroutine: Coroutine[Any, Any, R]) -> R:
    """Run a command's event loop: uvloop where it is installed (it halves the event loop's own cost per
    refresh, which the worker pays thousands of times a second), the standard loop elsewhere."""
    try:
        import uvloop
    except ImportError:  # Windows, or a build without it
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)
