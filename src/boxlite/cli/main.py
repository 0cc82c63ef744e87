"""Entry point: the ``boxlite`` command group, global options and error handling."""

from __future__ import annotations

import os
import sys
import traceback

import click

from .. import __version__
from ..errors import BoxliteError
from . import boxes, files, images, logs, run, serve, stats
from .common import STATE, configure_logging
from .errors import EXIT_INTERRUPTED, EXIT_RUNTIME, describe, print_error


class Group(click.Group):
    """Verbs listed in a fixed order; ``ps`` is an alias of ``ls``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, "ls" if cmd_name == "ps" else cmd_name)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", envvar="BOXLITE_HOME", metavar="DIR",
              help="Runtime home (default: $BOXLITE_HOME or ~/.boxlite).")  # fmt: skip
@click.option("--debug", is_flag=True, envvar="BOXLITE_DEBUG", help="Verbose logs and tracebacks.")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output where it applies.")
@click.version_option(__version__, "--version", prog_name="boxlite")
def cli(home: str | None, debug: bool, json_output: bool) -> None:
    """BoxLite: run commands in isolated boxes, no daemon needed."""
    STATE.home, STATE.debug, STATE.json = home, debug, json_output
    if debug:
        os.environ["BOXLITE_DEBUG"] = "1"  # also for child processes
    configure_logging(debug)


for command in (
    run.run, run.exec_, run.create, boxes.start, boxes.stop, boxes.restart, boxes.ls, boxes.rm, boxes.inspect,
    logs.logs, stats.stats, files.cp, images.pull, images.images, images.rmi, serve.serve,
):  # fmt: skip
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; never lets a traceback through unless ``--debug``."""
    configure_logging(False)
    try:
        result = cli.main(args=argv, prog_name="boxlite", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:  # plain `boxlite`: help
            click.echo(e.ctx.get_help())
            sys.exit(0)
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        print_error(f"{e.format_message()}{hint}")
        code = EXIT_RUNTIME
    except click.ClickException as e:
        e.show()
        code = e.exit_code
    except (KeyboardInterrupt, click.Abort):
        code = EXIT_INTERRUPTED
    except (BoxliteError, OSError) as e:
        if STATE.debug:
            traceback.print_exc()
        message, code = describe(e)
        print_error(message)
    except Exception as e:  # a bug: one line unless --debug
        if STATE.debug:
            traceback.print_exc()
        print_error(f"internal error: {type(e).__name__}: {e} (rerun with --debug for details)")
        code = EXIT_RUNTIME
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # `boxlite ls | head -1`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


if __name__ == "__main__":
    main()
