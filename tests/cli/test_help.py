"""Every command's `--help` shows examples that parse, and every listing has `--json`.

The click tree is built in-process from the typer app (`typer.main.get_command`), so these
tests take well under a second; one subprocess check confirms the real console script shows
the same examples.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import typer
from typer.core import TyperGroup

from relaymd.cli.app import app
from tests.support.cli_env import RELAYMD, CliEnv

if TYPE_CHECKING:
    # typer ships its own copy of click; its classes are what get_command returns.
    from typer._click.core import Command

# Commands that print a listing or a record and so must offer `--json` (any leaf named
# `list` is added by the test itself).
JSON_COMMANDS = {
    ("jobs", "list"),
    ("jobs", "show"),
    ("jobs", "logs"),
    ("jobs", "history"),
    ("jobs", "download"),
    ("clusters", "list"),
    ("clusters", "test"),
    ("workers", "list"),
    ("daemon", "status"),
    ("config", "show"),
    ("status",),
    ("submit",),
}

CmdPath = tuple[str, ...]


def walk(
    command: Command, ctx: typer.Context, path: CmdPath = ()
) -> Iterator[tuple[CmdPath, Command, typer.Context]]:
    """Every command of the tree (groups too), with a context chain like click builds."""
    yield path, command, ctx
    if isinstance(command, TyperGroup):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            yield from walk(sub, typer.Context(sub, info_name=name, parent=ctx), (*path, name))


Tree = dict[CmdPath, tuple["Command", typer.Context]]


def command_tree(root_app: typer.Typer) -> Tree:
    """The click command tree of a typer app, by command path (the root is `()`)."""
    root = typer.main.get_command(root_app)
    ctx = typer.Context(root, info_name="relaymd", **root.context_settings)
    return {path: (command, c) for path, command, c in walk(root, ctx)}


def leaves(tree: Tree) -> Tree:
    return {p: v for p, v in tree.items() if p and not isinstance(v[0], TyperGroup)}


def example_lines(help_text: str) -> list[str]:
    """The lines of the help's `Examples:` block: a line that is exactly `Examples:`, then the
    indented lines up to the next blank one. A block without `\\b` is rewrapped by click into
    one paragraph, so it has no such lines and counts as missing."""
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Examples:":
            block = []
            for follower in lines[i + 1 :]:
                if not follower.strip():
                    break
                block.append(follower.strip())
            return block
    return []


def relaymd_invocations(example: str) -> list[list[str]]:
    """The `relaymd ...` argument lists in one example line (a shell pipeline, maybe with a
    trailing `# comment`), each without the leading `relaymd`."""
    lexer = shlex.shlex(example, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token and all(ch in lexer.punctuation_chars for ch in token):
            segments.append([])
        else:
            segments[-1].append(token)
    return [segment[1:] for segment in segments if segment[:1] == ["relaymd"]]


def parse_invocation(tree: Tree, argv: list[str]) -> CmdPath:
    """Parse `argv` as click would for `relaymd argv`, without running anything: global
    options, the command path, then the leaf's own options and arguments (click checks
    names, values and required arguments). Returns the command path."""
    rest = list(argv)
    root, _ = tree[()]
    while rest and rest[0].startswith("-"):
        token = rest.pop(0)
        name, has_value, _ = token.partition("=")
        option = next((p for p in root.params if name in (*p.opts, *p.secondary_opts)), None)
        assert option is not None, f"unknown global option {token!r}"
        if not getattr(option, "is_flag", False) and not has_value:
            assert rest, f"{token} needs a value"
            rest.pop(0)
    path: CmdPath = ()
    while isinstance(tree[path][0], TyperGroup):
        assert rest, f"`relaymd {' '.join(argv)}`: no command after {' '.join(path) or 'relaymd'}"
        path = (*path, rest.pop(0))
        assert path in tree, f"`relaymd {' '.join(argv)}`: unknown command {' '.join(path)}"
    command, ctx = tree[path]
    assert ctx.parent is not None
    try:
        command.make_context(path[-1], rest, parent=ctx.parent)
    except typer.TyperException as exc:  # click's UsageError and its kin
        pytest.fail(f"`relaymd {' '.join(argv)}`: {exc.format_message()}")
    return path


TREE = command_tree(app)
LEAVES = leaves(TREE)
ids = [" ".join(p) for p in LEAVES]


def test_the_tree_has_every_command_group() -> None:
    top = {p[0] for p in LEAVES}
    assert {"submit", "status", "demo", "jobs", "clusters", "workers", "daemon", "config"} <= top
    assert len(LEAVES) >= 24


@pytest.mark.parametrize("path", list(LEAVES), ids=ids)
def test_every_leaf_help_has_examples(path: CmdPath) -> None:
    command, ctx = LEAVES[path]
    text = command.get_help(ctx)
    assert "Examples:" in text, f"`relaymd {' '.join(path)} --help` has no Examples: block"
    examples = example_lines(text)
    assert len(examples) >= 2, f"`relaymd {' '.join(path)} --help`: {examples}"
    # Each example is a command line, and at least one runs this very command.
    assert all("relaymd" in line for line in examples), examples
    used = {parse_invocation(TREE, argv) for e in examples for argv in relaymd_invocations(e)}
    assert path in used, f"no example of `relaymd {' '.join(path)}` in {examples}"
    # The one-line summary in the group listing stays the first docstring line.
    summary = command.get_short_help_str(limit=300)
    assert summary and "Examples" not in summary


@pytest.mark.parametrize("path", list(TREE), ids=[" ".join(p) or "relaymd" for p in TREE])
def test_every_example_parses(path: CmdPath) -> None:
    """Every `relaymd ...` in any Examples: block (groups too) names real commands, options
    and option values."""
    command, ctx = TREE[path]
    for example in example_lines(command.get_help(ctx)):
        for argv in relaymd_invocations(example):
            parse_invocation(TREE, argv)


@pytest.mark.parametrize(
    "path",
    sorted(JSON_COMMANDS | {p for p in LEAVES if p[-1] == "list"}),
    ids=lambda p: " ".join(p),
)
def test_listings_have_json(path: CmdPath) -> None:
    assert path in LEAVES, f"`relaymd {' '.join(path)}` is not a command any more"
    command, _ = LEAVES[path]
    names = {opt for param in command.params for opt in param.opts}
    assert "--json" in names, f"`relaymd {' '.join(path)}` has no --json option"


def test_a_missing_example_block_is_caught() -> None:
    """The checks above see a removed block, and a block that lost its `\\b` (rewrapped)."""
    probe = typer.Typer(rich_markup_mode=None)  # as the real app

    @probe.command("good")
    def good() -> None:
        """Summary.

        \b
        Examples:
          relaymd good
          relaymd good --json
        """

    @probe.command("bare")
    def bare() -> None:
        """Summary without examples."""

    @probe.command("rewrapped")
    def rewrapped() -> None:
        """Summary.

        Examples:
          relaymd rewrapped
          relaymd rewrapped --json
        """

    probe_leaves = leaves(command_tree(probe))
    found = {p[-1]: example_lines(c.get_help(ctx)) for p, (c, ctx) in probe_leaves.items()}
    assert found == {"good": ["relaymd good", "relaymd good --json"], "bare": [], "rewrapped": []}


def test_example_parsing_rejects_unknown_flags() -> None:
    with pytest.raises(pytest.fail.Exception, match="no-such-flag"):
        parse_invocation(TREE, ["jobs", "list", "--no-such-flag"])
    with pytest.raises(AssertionError, match="unknown command"):
        parse_invocation(TREE, ["jobs", "frobnicate"])
    argv = relaymd_invocations("relaymd --config a.yaml jobs logs j1 -n 5 | jq '.a | .b'  # x")
    assert argv == [["--config", "a.yaml", "jobs", "logs", "j1", "-n", "5"]]
    assert parse_invocation(TREE, argv[0]) == ("jobs", "logs")


def test_real_console_script_shows_examples(cli: CliEnv) -> None:
    for path in (("jobs", "logs"), ("daemon", "status")):
        done = subprocess.run(
            [str(RELAYMD), *path, "--help"], env=cli.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        command, ctx = LEAVES[path]
        assert example_lines(done.stdout) == example_lines(command.get_help(ctx))
