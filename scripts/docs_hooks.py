"""MkDocs hooks (mkdocs.yml `hooks:`): the pages that are written from the code at build time, so they cannot drift.

- `cli.md`: every command and subcommand of `segcli.cli.app` (walked as click sees it, through
  `typer.main.get_command`), each argument and option with its type, default and help. Nothing is committed:
  the page exists only in the built site. `python scripts/docs_hooks.py cli.md` writes it to a file to read offline.
- `models.md`: the line `<!-- zoo-table -->` becomes the table of the zoo's registry (name, modes, description).

Tables of measurements (bench, compare, bundled models) come from JSON results instead and are committed:
scripts/docs_bench.py, docs_compare.py and models_readme.py write them.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # mkdocs runs this file by path: make the worktree's segcli importable
    sys.path.insert(0, str(ROOT))

ZOO_MARKER = "<!-- zoo-table -->"
CLI_PAGE = "cli.md"


def command_tree() -> list[tuple[str, object, object]]:
    """(`segcli predict`, click command, its context) for the root and every command below it, in help order."""
    import typer
    import typer.main

    from segcli.cli import app

    root = typer.main.get_command(app)
    found = []

    def walk(command, name: str, parent) -> None:
        ctx = typer.Context(command, info_name=name, parent=parent)
        found.append((ctx.command_path, command, ctx))
        for sub_name, sub in getattr(command, "commands", {}).items():
            walk(sub, sub_name, ctx)

    walk(root, "segcli", None)
    return found


def _cell(text: object) -> str:
    """Text fit for one cell of a Markdown table: one line, pipes escaped outside code spans (inside, they are text)."""
    parts = " ".join(str(text).split()).split("`")
    return "`".join(part if index % 2 else part.replace("|", "\\|") for index, part in enumerate(parts))


def _names(param) -> str:
    if param.param_type_name == "argument":
        return f"`{(param.metavar or param.name).upper()}{'...' if param.nargs == -1 else ''}`"
    return " / ".join(f"`{name}`" for name in [*param.opts, *param.secondary_opts])


def _type(param, ctx) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    if hasattr(param, "display_type"):  # typer >= 0.25 parses with its own copy of click: <int>, <a|b>, <list[str]>
        text = param.display_type(ctx).strip("<>")
        if text.startswith("list[") and text.endswith("]"):
            text = f"{text[5:-1]}, repeatable"
    else:
        choices = getattr(param.type, "choices", None)
        text = "|".join(str(getattr(c, "value", c)) for c in choices) if choices else param.type.name
    return text.replace("|", " \\| ")


def _default(param) -> str:
    if param.required:
        return "required"
    value = param.default
    if value is None or callable(value) or value == () or value == []:
        return ""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        if param.secondary_opts:
            return f"`{(param.opts if value else param.secondary_opts)[0]}`"
        return "on" if value else ""
    if isinstance(value, list | tuple):
        value = ", ".join(str(getattr(v, "value", v)) for v in value)
    return f"`{value}`"


def command_section(path: str, command, ctx) -> str:
    """One command's part of the reference: heading, help, usage, and a table of its parameters."""
    level = "#" * min(2 + path.count(" ") - 1, 4) if " " in path else "##"
    usage = " ".join([path, "[OPTIONS]", *(_names(p).strip("`") for p in command.params
                                          if p.param_type_name == "argument")])
    if getattr(command, "commands", None):
        usage += " COMMAND [ARGS]..."
    lines = [f"{level} `{path}`", "", command.help or "", "", "```text", usage, "```", ""]
    subcommands = getattr(command, "commands", {})
    if subcommands:
        lines += ["| command | what it does |", "|---|---|"]
        lines += [f"| [`{path} {name}`](#{_anchor(f'{path} {name}')}) | {_cell(sub.get_short_help_str(200))} |"
                  for name, sub in subcommands.items()]
        lines.append("")
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    if params:
        lines += ["| argument or option | type | default | description |", "|---|---|---|---|"]
        lines += [f"| {_names(p)} | {_type(p, ctx)} | {_default(p)} | {_cell(getattr(p, 'help', None) or '')} |"
                  for p in params]
        lines.append("")
    return "\n".join(lines)


def _anchor(path: str) -> str:
    """The id MkDocs' toc extension gives the heading `` `segcli data synth` ``."""
    return path.replace(" ", "-")


def cli_reference() -> str:
    """The whole CLI reference page, in Markdown."""
    sections = [command_section(path, command, ctx) for path, command, ctx in command_tree()]
    intro = ["# CLI reference", "",
             "Generated from the command-line parser itself when the site is built, so it lists exactly the commands "
             "and options of this version. Every command also takes `--help`. A default left empty means the option "
             "is off or unset unless given (its description says what is used then).", ""]
    return "\n".join(intro + sections)


def zoo_table() -> str:
    """The registry's models as a Markdown table."""
    from segcli.models.registry import list_models

    rows = ["| model | modes | what it is |", "|---|---|---|"]
    rows += [f"| `{e.name}` | {', '.join(str(getattr(m, 'value', m)) for m in e.modes)} | {_cell(e.description)} |"
             for e in list_models()]
    return "\n".join(rows)


def on_files(files, config):
    """MkDocs event: add the generated CLI reference to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """MkDocs event: fill the zoo table into the models page."""
    if ZOO_MARKER in markdown:
        markdown = markdown.replace(ZOO_MARKER, zoo_table())
    return markdown


if __name__ == "__main__":
    Path(sys.argv[1] if len(sys.argv) > 1 else CLI_PAGE).write_text(cli_reference() + "\n")
