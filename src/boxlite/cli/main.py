"""Entry point: the ``boxlite`` command group, global options and error handling."""

from __future__ import annotations

import gc
import importlib
import os
import sys

import click

from .. import __version__
from ..errors import BoxliteError
from .common import STATE, apply_config_file, apply_stored_login, configure_logging
from .errors import EXIT_INTERRUPTED, EXIT_RUNTIME, describe, print_error
from .globalopts import hoist

COMMANDS = {
    "run": ("run", "run"), "exec": ("run", "exec_"), "create": ("run", "create"),
    "start": ("boxes", "start"), "stop": ("boxes", "stop"), "restart": ("boxes", "restart"),
    "ls": ("boxes", "ls"), "rm": ("boxes", "rm"), "inspect": ("boxes", "inspect"),
    "logs": ("logs", "logs"), "stats": ("stats", "stats"), "cp": ("files", "cp"),
    "pull": ("images", "pull"), "images": ("images", "images"), "rmi": ("images", "rmi"),
    "volume": ("volumes", "volume"),
    "serve": ("serve", "serve"), "mcp": ("mcp", "mcp"),
    "pause": ("pause", "pause"), "resume": ("pause", "resume"), "fork": ("pause", "fork"),
    "snapshot": ("state", "snapshot"), "clone": ("state", "clone"), "export": ("state", "export"),
    "import": ("state", "import_"),
    "kill": ("docker", "kill"), "wait": ("docker", "wait"), "version": ("docker", "version"),
    "info": ("docker", "info"), "completion": ("completion", "completion"), "auth": ("auth", "auth"),
    "network": ("network", "network"),
}  # fmt: skip
"""Verb -> (module of boxlite.cli, attribute): a verb's module (and what it needs: the runtime,
the image client, the REST server) is imported only when that verb runs or help lists it."""


class Group(click.Group):
    """Verbs listed in a fixed order and loaded on first use; ``ps`` and ``list`` are aliases of ``ls``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args[:1] == ["run"] and not (ctx.params.get("url") or ctx.params.get("ray")):  # local `run`: start
            # the zygote in parallel with the verb's imports (not when a stored login sends it elsewhere)
            from .credentials import exists
            from .warm import prewarm

            if not exists(ctx.params.get("home")):
                prewarm(args[1:], ctx.params.get("home"))
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The verb list of ``--help`` from cli/summaries.py: no verb module is imported for it."""
        from .summaries import SUMMARIES

        commands = [
            (name, self.commands.get(name) or click.Command(name, help=SUMMARIES[name]))
            if name in SUMMARIES
            else (name, self.get_command(ctx, name))
            for name in self.list_commands(ctx)
        ]
        rows = [(name, cmd) for name, cmd in commands if cmd is not None and not cmd.hidden]
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        name = "ls" if cmd_name in ("ps", "list") else cmd_name  # `list`: BoxLite's name
        if name in COMMANDS and name not in self.commands:
            module, attr = COMMANDS[name]
            self.add_command(getattr(importlib.import_module(f"{__package__}.{module}"), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", envvar="BOXLITE_HOME", metavar="DIR",
              help="Runtime home (default: $BOXLITE_HOME or ~/.boxlite).")  # fmt: skip
@click.option("--debug", is_flag=True, envvar="BOXLITE_DEBUG", help="Verbose logs and tracebacks.")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output where it applies.")
@click.option("--url", envvar="BOXLITE_REST_URL", metavar="URL",
              help="Work on the boxes of a 'boxlite serve' server (http(s)://host:port or unix:///path).")  # fmt: skip
@click.option("--api-key", envvar="BOXLITE_API_KEY", metavar="KEY", help="Bearer token for --url.")
@click.option("--ray", envvar="BOXLITE_RAY_ADDRESS", metavar="ADDRESS",
              help="Work on the boxes of a Ray cluster ('auto', or host:port of its head).")  # fmt: skip
@click.option("--profile", envvar="BOXLITE_PROFILE", metavar="NAME",
              help="Stored login to use ('boxlite auth login'; default: 'default').")  # fmt: skip
@click.option("--registry", "registries", multiple=True, metavar="HOST",
              help="Registry tried first for unqualified image names (HTTPS; repeatable).")  # fmt: skip
@click.option("--config", "config_file", metavar="FILE",
              help="JSON runtime options: home_dir, image_registries (BoxLite's --config).")  # fmt: skip
@click.version_option(__version__, "--version", prog_name="boxlite")
def cli(home: str | None, debug: bool, json_output: bool, url: str | None = None, api_key: str | None = None,
        ray: str | None = None, profile: str | None = None, registries: tuple[str, ...] = (),
        config_file: str | None = None) -> None:  # fmt: skip
    """BoxLite: run commands in isolated boxes, no daemon needed."""
    STATE.home, STATE.debug, STATE.json = home, debug, json_output
    STATE.url, STATE.api_key, STATE.ray = url or None, api_key or None, ray or None
    STATE.profile = profile or None
    STATE.registries = list(registries)
    if config_file:
        apply_config_file(config_file)
    if debug:
        os.environ["BOXLITE_DEBUG"] = "1"  # also for child processes
    configure_logging(debug)
    if click.get_current_context().invoked_subcommand not in ("auth", "serve"):
        apply_stored_login()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; never lets a traceback through unless ``--debug``."""
    # Importing the verb and the runtime creates ~40,000 lasting container objects: at the default
    # threshold (700) the cycle collector runs ~65 times and frees a few hundred (~10 % of the
    # imports' CPU). Collections stay on, rarer, so a long attached session still collects.
    gc.set_threshold(50_000, 20, 100)
    configure_logging(False)
    try:
        args = hoist(sys.argv[1:] if argv is None else argv, cli)
        result = cli.main(args=args, prog_name="boxlite", standalone_mode=False)
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
            _print_traceback()
        message, code = describe(e)
        print_error(message)
    except Exception as e:  # a bug: one line unless --debug
        if STATE.debug:
            _print_traceback()
        print_error(f"internal error: {type(e).__name__}: {e} (rerun with --debug for details)")
        code = EXIT_RUNTIME
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # `boxlite ls | head -1`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


def _print_traceback() -> None:
    import traceback  # only with --debug: it pulls in linecache/tokenize

    traceback.print_exc()


if __name__ == "__main__":
    main()
