"""The ``nftpolicy`` command: a thin click layer over the enforcer's functions.

Exit codes (``ExitCode``): 0 success (for ``explain``: the flow is allowed),
1 ``explain`` found the flow denied, 2 invalid input (a malformed or invalid
object, an unknown pod, a bad option).
"""
from __future__ import annotations

import json
import sys
from enum import IntEnum

import click

from enforcer import demo as demo_module
from enforcer import offline
from rules.load import InvalidObject


class ExitCode(IntEnum):
    OK = 0
    DENIED = 1
    INVALID_INPUT = 2


def _fail(message: str) -> None:
    click.echo(f"nftpolicy: {message}", err=True)
    sys.exit(ExitCode.INVALID_INPUT)


_files = click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True),
    help="Manifest file or directory (YAML or JSON; multi-document and kind: List). Repeatable.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Kubernetes NetworkPolicy enforcement on nftables."""


@main.command()
@_files
@click.option("--node", required=True, help="Node whose pods the ruleset protects.")
@click.option("--format", "fmt", type=click.Choice(["nft", "json"]), default="nft", show_default=True)
def render(paths: tuple[str, ...], node: str, fmt: str) -> None:
    """Print the nftables ruleset NODE needs for the state in the files."""
    try:
        click.echo(offline.render(paths, node, fmt), nl=False)
    except (InvalidObject, offline.UsageError) as e:
        _fail(str(e))


@main.command()
@_files
@click.option("--from", "src", required=True, metavar="NS/POD|IP", help="Source of the flow.")
@click.option("--to", "dst", required=True, metavar="NS/POD|IP", help="Destination of the flow.")
@click.option("--port", required=True, metavar="N[/PROTO]", help="Destination port; protocol TCP (default), UDP or SCTP.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def explain(paths: tuple[str, ...], src: str, dst: str, port: str, fmt: str) -> None:
    """Say whether a new connection is allowed, and which policy rules decide it.

    Exits 0 when allowed and 1 when denied.
    """
    try:
        explanation = offline.explain(paths, src, dst, port)
    except (InvalidObject, offline.UsageError) as e:
        _fail(str(e))
        return
    if fmt == "json":
        click.echo(json.dumps(explanation.as_json(), indent=2))
    else:
        click.echo(explanation.as_text(), nl=False)
    sys.exit(ExitCode.OK if explanation.verdict.allowed else ExitCode.DENIED)


@main.command()
def demo() -> None:
    """Show the example cluster's connectivity before and after its policies."""
    demo_module.run()
