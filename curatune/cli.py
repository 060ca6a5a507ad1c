"""The `curatune` command line.

Each stage registers its own subcommands from ``curatune/<stage>/command.py`` (a
``register(app)`` function), so a stage's CLI lives beside its code. This module owns the
shared pieces: the config command, error handling, and the entry point.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from curatune import __version__
from curatune.config import defaults_yaml, load_config
from curatune.errors import (
    ConfigError,
    CuratuneError,
    environment_error,
    is_environment_error,
)
from curatune.preflight import config_problems
from curatune.rundir import atomic_write_text

app = typer.Typer(
    name="curatune",
    help="Curate instruction data, fine-tune on nested subsets, and measure learning vs forgetting.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show every config key with its default, or check a config file.")
app.add_typer(config_app, name="config")

err_console = Console(stderr=True, soft_wrap=True)

# Modules that add subcommands, in the order they appear in --help.
_COMMAND_MODULES = (
    "curatune.curate.command",
    "curatune.curate.audit_command",
    "curatune.train.command",
    "curatune.evaluate.command",
    "curatune.run",
    "curatune.evaluate.report_command",
    "curatune.evaluate.significance_command",
    "curatune.export_command",
    "curatune.app.command",
    "curatune.data.demo_command",
    "curatune.models_command",
)


@config_app.callback(invoke_without_command=True)
def config_defaults(
    ctx: typer.Context,
    defaults: bool = typer.Option(False, "--defaults", help="Print the complete config with every default, each key commented."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="With --defaults: write to this file instead of stdout."),
) -> None:
    """Show every config key with its default (--defaults), or check a config file (check)."""
    if ctx.invoked_subcommand is not None:
        return
    if not defaults:
        typer.echo(ctx.get_help())
        raise typer.Exit()

    text = defaults_yaml()
    if output:
        atomic_write_text(output, text + "\n")
        err_console.print(f"wrote {output}")
    else:
        typer.echo(text)


@config_app.command("check")
def config_check(
    config: Path = typer.Argument(..., help="Experiment YAML file."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: key.path=value (repeatable)."),
    show: bool = typer.Option(False, "--show", help="Print the resolved config."),
) -> None:
    """Validate a config file and report every problem with its key: unknown or misspelt keys, bad
    values, data and suite files that do not exist, models that cannot be found, nothing to curate."""

    cfg = load_config(config, set_)
    if show:
        typer.echo(yaml.safe_dump(cfg.resolved(), sort_keys=False))
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(f"{config}: valid YAML and keys, but it cannot run here:\n  " + "\n  ".join(problems))
    err_console.print(f"[green]{config}: valid[/green] (files exist, models resolvable, data to curate)")


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


def _register_stage_commands() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # stage not built in this checkout
                continue
            raise
        module.register(app)


_register_stage_commands()


def _print_error(exc: Exception) -> None:
    err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)


def main() -> None:
    try:
        app()
    except CuratuneError as exc:
        _print_error(exc)
        sys.exit(2)
    except Exception as exc:
        # Reading or writing a path failed (permissions, a full disk, a file in the way), as an
        # OSError or inside a library's own error (safetensors names the OS error in its message):
        # the environment, not a bug, so one sentence instead of a traceback, wherever it happened.
        if not is_environment_error(exc):
            raise
        _print_error(environment_error(exc, action="read or write"))
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished work is saved, re-run the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
