"""The ``engine-init`` command group, ``run``, and the only module that knows exit codes
(sysexits-style, in one ordered table: :data:`EXIT_CODES`) and terminals. The other commands are
in :mod:`app.commands`, imported when named: ``validate`` does not load the fleet's.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import signal
import sys
import time
import traceback

import click

from app import errors, events
from app.commands import State
from app.events import JsonLinesFormatter, ProgressBarHandler, TextFormatter
from app.values import LOG_FORMAT_ENV

EXIT_USAGE = 2  # click's own code (os.EX_USAGE would be 64)
SIGNAL_EXIT_BASE = 128  # a signal's exit, as a shell reports it
EXIT_SIGINT = SIGNAL_EXIT_BASE + signal.SIGINT  # 130
EXIT_SIGTERM = SIGNAL_EXIT_BASE + signal.SIGTERM  # 143

#: First match wins: subclasses before their bases.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (errors.ConfigError, os.EX_CONFIG),
    (errors.ModelDataError, os.EX_DATAERR),
    (errors.CalibrationCacheError, os.EX_DATAERR),
    (errors.HostProbeError, os.EX_UNAVAILABLE),
    (errors.BackendUnavailableError, os.EX_UNAVAILABLE),
    (errors.RegistryError, os.EX_UNAVAILABLE),
    (errors.EngineBuildError, os.EX_SOFTWARE),
    (errors.CacheIOError, os.EX_IOERR),
    (errors.CacheWriteError, os.EX_CANTCREAT),
    (errors.LockTimeoutError, os.EX_TEMPFAIL),
    (errors.MarkerError, os.EX_TEMPFAIL),
    (click.UsageError, EXIT_USAGE),
    (OSError, os.EX_IOERR),
)
LOGGER = logging.getLogger("engine_init")
LOGGER.addHandler(logging.NullHandler())  # until a command sets the real one


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, errors.BuildCancelledError):
        return SIGNAL_EXIT_BASE + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_SIGINT
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return os.EX_SOFTWARE


# The group's options, which users also type after the command (``validate --config x.yaml``).
_GLOBAL_VALUE_OPTIONS = ("--config", "--log-format")
_GLOBAL_FLAGS = ("--debug",)


def _global_options_first(args: list[str]) -> list[str]:
    front: list[str] = []
    rest: list[str] = []
    tail = iter(args)
    for arg in tail:
        if arg == "--":  # everything after it is an argument
            rest += [arg, *tail]
        elif arg in _GLOBAL_VALUE_OPTIONS and (value := next(tail, None)) is not None:
            front += [arg, value]
        elif arg in _GLOBAL_FLAGS or arg.startswith(tuple(f"{o}=" for o in _GLOBAL_VALUE_OPTIONS)):
            front.append(arg)
        else:
            rest.append(arg)
    return front + rest




# The commands beside ``run``, by the module whose ``register(group)`` adds them.
_LAZY_COMMANDS = {
    **dict.fromkeys(("validate", "status", "verify", "prune", "wait-ready", "schema"),
                    "app.commands"),
    **dict.fromkeys(("export", "import", "push", "pull", "fleet"), "app.commands.fleet"),
}


class _Group(click.Group):
    """A group whose options also work after the command, as users type them, and whose
    commands are imported when named (click's lazy subcommands pattern)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _global_options_first(args))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            # An unknown name loads them all: click's "did you mean" looks among those loaded.
            names = [cmd_name] if cmd_name in _LAZY_COMMANDS else list(_LAZY_COMMANDS)
            for module in dict.fromkeys(_LAZY_COMMANDS[n] for n in names if n not in self.commands):
                importlib.import_module(module).register(self)
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _note_global_options(command)
        return command


def _note_global_options(command: click.Command) -> None:
    command.epilog = command.epilog or GLOBAL_OPTIONS_NOTE
    for below in getattr(command, "commands", {}).values():
        _note_global_options(below)


GLOBAL_OPTIONS_NOTE = "--config, --log-format and --debug may also follow the command."


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=GLOBAL_OPTIONS_NOTE)
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="Config file [env ENGINE_INIT_CONFIG; default /etc/engine-init/config.yaml].")
@click.option("--log-format", type=click.Choice(["auto", "json", "text"]), envvar=LOG_FORMAT_ENV,
              default="auto", show_default=True,
              help=f"Event format on stderr: JSON lines when not a terminal [env {LOG_FORMAT_ENV}].")
@click.option("--debug", is_flag=True, default=False, help="Debug events and tracebacks.")
@click.version_option(package_name="engine-init")
@click.pass_context
def cli(ctx: click.Context, config: str | None, log_format: str, debug: bool) -> None:
    """Prepare inference engines before the robot's software starts."""
    text = log_format == "text" or (log_format == "auto" and sys.stderr.isatty())
    handler = ProgressBarHandler(sys.stderr) if text else logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if text else JsonLinesFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(logging.DEBUG if debug else logging.INFO)
    LOGGER.propagate = False
    ctx.obj = State(config)


@cli.command()
@click.pass_obj
def run(state: State) -> None:
    """Reuse or build every engine, then write the readiness marker."""
    from app.cancel import checkpoint

    # Loading PyYAML, pydantic and the models is start-up, not the "config" phase.
    from app.loading import path_of_failed_config
    from app.metrics import RunRecorder, process_age_s
    from app.readiness import clear_stale_marker

    checkpoint()

    started = time.perf_counter()
    timings: dict[str, float] = {"startup": process_age_s()}
    recorder = RunRecorder(LOGGER, timings)  # the metrics textfile, written on every outcome
    try:
        config = state.config()
    except errors.ConfigError as exc:
        marker = path_of_failed_config("readiness_marker", state.config_arg)
        if marker is not None:
            clear_stale_marker(marker, LOGGER, report_refusal=True)
        recorder.finish(exit_code_for(exc), config_arg=state.config_arg)
        raise
    timings["config"] = time.perf_counter() - started
    recorder.configured(config)
    # Hash last run's engines while the job's modules load and the host is probed.
    from app.cache import hashing as prehash

    early = prehash.start(config.cache_root)
    from app.job import run_job

    checkpoint()
    try:
        doc = run_job(config, LOGGER, timings, early=early)
        checkpoint()  # a signal during the last step: this run did not complete
    except BaseException as exc:
        # Whatever happened, even a signal after the marker was written: no marker on failure.
        clear_stale_marker(config.readiness_marker, LOGGER, report_refusal=False)
        recorder.finish(exit_code_for(exc), config)
        raise
    recorder.finish(0, config)
    built = sum(e["outcome"] == "built" for e in doc["engines"])
    promoted = sum(e["outcome"] == "promoted" for e in doc["engines"])
    click.echo(f"ready: {built} built, {len(doc['engines']) - built - promoted} reused, "
               f"{promoted} promoted, "
               f"marker {config.readiness_marker} ({time.perf_counter() - started:.2f} s)")


def main(argv: list[str] | None = None) -> int:
    from app.cancel import checkpoint, install_signal_handlers

    args = sys.argv[1:] if argv is None else argv
    try:
        install_signal_handlers()  # for callers of main() itself (app/__main__.py did already)
        cli.main(args=args, prog_name="engine-init", standalone_mode=False)
        checkpoint()  # a signal that arrived after the command's last checkpoint
        if argv is None:
            # This process ends now: its objects need not be freed one by one. Frozen, they are
            # skipped by the interpreter's final collections (pydantic's models and schemas
            # made a warm run's exit last ~0.1 s on 2 cores; frozen, ~0.02 s).
            gc.freeze()
        return 0
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:  # EOF or ^C inside a click prompt
        return _report(errors.BuildCancelledError(signal.SIGINT), debug="--debug" in args)
    except click.ClickException as exc:
        return _report_click(exc)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 1
    except BaseException as exc:
        code = _report(exc, debug="--debug" in args)
        if isinstance(exc, errors.BuildCancelledError) and argv is None:
            # This process owns the interpreter: unwinding cleaned up, workers are not waited for.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code


def _report_click(exc: click.ClickException) -> int:
    """click's error as the project's one line; the hint names the parsed command's help."""
    code = EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    ctx, param = getattr(exc, "ctx", None), getattr(exc, "param", None)
    if isinstance(exc, click.BadParameter) and ctx is not None and param is not None and \
            ctx.get_parameter_source(param.name) is click.core.ParameterSource.ENVIRONMENT:
        exc.param_hint = f"{param.envvar} ({param.opts[0]})"  # the user typed no such option
    where = ctx.command_path if ctx is not None else "engine-init"
    _write_error(exc.format_message(), f"run `{where} --help`", code, type(exc).__name__)
    return code


def _report(exc: BaseException, debug: bool) -> int:
    code = exit_code_for(exc)
    known = isinstance(exc, errors.EngineInitError)
    message = str(exc) if known else f"internal error: {type(exc).__name__}: {exc}"
    hint = getattr(exc, "hint", "") or ("" if known else "run again with --debug and report it")
    _write_error(message, hint, code, type(exc).__name__)
    if debug:
        traceback.print_exception(exc)
    return code


def _write_error(message: str, hint: str, code: int, error_class: str) -> None:
    events.emit(LOGGER, logging.ERROR, events.RUN_FAILED, message, exit_code=code,
                error_class=error_class, hint=hint)
    line = f"engine-init: error: {message}".replace("\n", " ") + (f" (hint: {hint})" if hint else "")
    sys.stderr.write(line + "\n")
    from app.metrics import write_reason

    write_reason(line, code)  # what `kubectl describe pod` shows; only where Kubernetes made the file
