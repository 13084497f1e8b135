"""`ws-watcher completion bash|zsh|fish`: a shell completion script, made from the parser.

The parser is the one source of truth: the script is generated from its options, choices
and subcommands each time it is asked for, so a new option completes without anyone
remembering this file. Pure: a parser in, a script (text) out.

What completes: subcommands, every option of the scope the cursor is in (before the
subcommand: the top level's; after it: that subcommand's), the values of options with
choices (`--log-level`, `-o`, …) and file names after options whose value is a `PATH` or a
`FILE`. Instance ids do not complete: that would take a round trip to containerd on every
Tab.

Rejected: shtab (it writes bash and zsh, not fish) and argcomplete (it runs the program on
every Tab, importing trio and grpc: a noticeable pause in an interactive shell).
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["SHELLS", "script"]

SHELLS = ("bash", "zsh", "fish")
#: metavars whose values are file names
FILE_METAVARS = frozenset({"PATH", "FILE"})
#: a description longer than this is cut: the shells show one line per candidate
DESCRIPTION = 70
#: what a generated word may be: anything else would need quoting in three shells' syntaxes
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]*|-{1,2}[A-Za-z0-9][A-Za-z0-9-]*")


@dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    flags: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...] = ()
    files: bool = False
    repeatable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Positional:
    name: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Scope:
    """The top level or one subcommand: what may be typed there."""

    name: str
    help: str
    options: tuple[Option, ...]
    positionals: tuple[Positional, ...]
    commands: tuple[Scope, ...] = ()

    @property
    def valued(self) -> tuple[str, ...]:
        """The flags that take the next word as their value."""
        return tuple(f for o in self.options if o.takes_value for f in o.flags)


def _word(text: str) -> str:
    if not _WORD.fullmatch(text):
        raise ValueError(f"cannot complete {text!r}: not a plain word")
    return text


def _describe(text: str | None) -> str:
    """One short line of plain words from an option's help."""
    if not text or text == argparse.SUPPRESS:
        return ""
    text = re.sub(r"%\([a-z_]+\)[a-z]", "", text)  # argparse's %(default)s
    text = re.split(r" \(|; ", text, maxsplit=1)[0]
    # words and light punctuation: nothing a shell's syntax or zsh's `[...]` would read
    text = re.sub(r"[^A-Za-z0-9 ,./'=*+_-]", "", " ".join(text.split()))
    if len(text) > DESCRIPTION:
        text = text[: DESCRIPTION - 3].rstrip() + "..."
    return text


def scope_of(parser: argparse.ArgumentParser, name: str = "", help: str = "") -> Scope:
    """What `parser` accepts, as data the generators below render."""
    options: list[Option] = []
    positionals: list[Positional] = []
    commands: list[Scope] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for command, sub in action.choices.items():
                commands.append(scope_of(sub, _word(command), _describe(helps.get(command))))
        elif action.option_strings:
            if action.help == argparse.SUPPRESS:
                continue
            options.append(
                Option(
                    flags=tuple(_word(f) for f in action.option_strings),
                    help=_describe(action.help),
                    takes_value=action.nargs != 0,
                    choices=tuple(_word(str(c)) for c in action.choices or ()),
                    files=action.metavar in FILE_METAVARS,
                    repeatable=isinstance(action, argparse._AppendAction),
                )
            )
        else:
            metavar = action.metavar if isinstance(action.metavar, str) else action.dest
            choices = tuple(_word(str(c)) for c in action.choices or ())
            positionals.append(Positional(name=metavar, choices=choices))
    return Scope(
        name=name,
        help=help,
        options=tuple(options),
        positionals=tuple(positionals),
        commands=tuple(commands),
    )


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of `shell` for `parser`'s program."""
    prog = _word(parser.prog)
    top = scope_of(parser)
    if shell == "bash":
        return _bash(prog, top)
    if shell == "zsh":
        return _zsh(prog, top)
    if shell == "fish":
        return _fish(prog, top)
    raise ValueError(f"no completion for {shell!r}: one of {', '.join(SHELLS)}")


# --- bash ------------------------------------------------------------------------------------


def _function(prog: str) -> str:
    return "_" + re.sub(r"[^A-Za-z0-9_]", "_", prog)


def _compgen(words: Iterable[str]) -> str:
    return f'COMPREPLY=( $(compgen -W {shlex.quote(" ".join(words))} -- "$cur") )'


def _bash_scope(scope: Scope, indent: str) -> list[str]:
    lines = [f'{indent}case "$prev" in']
    for option in scope.options:
        if not option.takes_value:
            continue
        if option.choices:
            reply = _compgen(option.choices)
        elif option.files:
            reply = 'COMPREPLY=( $(compgen -f -- "$cur") )'
        else:
            reply = "COMPREPLY=()"  # a value nobody can guess: offer nothing
        lines.append(f"{indent}    {'|'.join(option.flags)}) {reply}; return ;;")
    lines.append(f"{indent}esac")
    flags = [f for o in scope.options for f in o.flags]
    words = [c.name for c in scope.commands] or [
        c for p in scope.positionals[:1] for c in p.choices
    ]
    lines.append(f'{indent}if [[ "$cur" == -* ]]; then {_compgen(flags)}')
    lines.append(f"{indent}else {_compgen(words)}; fi")
    return lines


def _bash(prog: str, top: Scope) -> str:
    fn = _function(prog)
    valued = "|".join(top.valued) or "--"
    lines = [
        f"# bash completion for {prog}: generated by `{prog} completion bash`.",
        f"# Load it with: source <({prog} completion bash)",
        f"{fn}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" command="" skip=0 i word',
        '    (( COMP_CWORD > 0 )) && prev="${COMP_WORDS[COMP_CWORD-1]}"',
        "    # the subcommand: the first word that is neither an option nor an option's value",
        "    for (( i = 1; i < COMP_CWORD; i++ )); do",
        '        word="${COMP_WORDS[i]}"',
        "        if (( skip )); then skip=0; continue; fi",
        '        case "$word" in',
        f"            {valued}) skip=1 ;;",
        "            -*) ;;",
        '            *) command="$word"; break ;;',
        "        esac",
        "    done",
        '    case "$command" in',
    ]
    for command in top.commands:
        lines.append(f"        {command.name})")
        lines += _bash_scope(command, " " * 12)
        lines.append("            ;;")
    lines.append("        *)")
    lines += _bash_scope(top, " " * 12)
    lines += ["            ;;", "    esac", "}", f"complete -F {fn} {prog}", ""]
    return "\n".join(lines)


# --- zsh -------------------------------------------------------------------------------------


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _zsh_option(option: Option) -> list[str]:
    specs = []
    for flag in option.flags:
        spec = f"{'*' if option.repeatable else ''}{flag}[{option.help}]"
        if option.takes_value:
            if option.choices:
                action = f"({' '.join(option.choices)})"
            elif option.files:
                action = "_files"
            else:
                action = " "
            spec += f":{option.flags[-1].lstrip('-')}:{action}"
        specs.append(_zsh_quote(spec))
    return specs


def _zsh_arguments(scope: Scope, *, extra: Sequence[str] = (), indent: str) -> list[str]:
    specs = [s for o in scope.options for s in _zsh_option(o)]
    for n, positional in enumerate(scope.positionals, start=1):
        action = f"({' '.join(positional.choices)})" if positional.choices else " "
        specs.append(_zsh_quote(f"{n}:{positional.name}:{action}"))
    specs += extra
    return [f"{indent}_arguments -C \\", *(f"{indent}  {s} \\" for s in specs[:-1]),
            f"{indent}  {specs[-1]}"]  # fmt: skip


def _zsh(prog: str, top: Scope) -> str:
    fn = _function(prog)
    lines = [
        f"#compdef {prog}",
        f"# zsh completion for {prog}: generated by `{prog} completion zsh`.",
        f"# Load it with: source <({prog} completion zsh), or save it as _{prog} on $fpath",
        f"{fn}() {{",
        "    local curcontext=$curcontext state line",
        "    typeset -A opt_args",
        "    local -a commands",
        "    commands=(",
        *(f"        {_zsh_quote(f'{c.name}:{c.help}')}" for c in top.commands),
        "    )",
        *_zsh_arguments(
            top, extra=("'1:command:->command'", "'*::argument:->argument'"), indent="    "
        ),
        "    case $state in",
        "        command) _describe -t commands command commands ;;",
        "        argument)",
        "            case $line[1] in",
    ]
    for command in top.commands:
        if not command.options and not command.positionals:
            continue
        lines.append(f"                {command.name})")
        lines += _zsh_arguments(command, indent=" " * 20)
        lines.append("                    ;;")
    lines += [
        "            esac",
        "            ;;",
        "    esac",
        "}",
        "if [[ $zsh_eval_context[-1] == loadautoload ]]; then",
        f'    {fn} "$@"',
        "else",
        f"    compdef {fn} {prog}",
        "fi",
        "",
    ]
    return "\n".join(lines)


# --- fish ------------------------------------------------------------------------------------


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_option(prog: str, condition: str, option: Option) -> str:
    parts = [f"complete -c {prog} -n {_fish_quote(condition)}"]
    for flag in option.flags:
        if flag.startswith("--"):
            parts.append(f"-l {flag[2:]}")
        elif len(flag) == 2:
            parts.append(f"-s {flag[1]}")
        else:
            parts.append(f"-o {flag[1:]}")
    if option.takes_value:
        if option.choices:
            parts.append(f"-x -a {_fish_quote(' '.join(option.choices))}")
        else:
            parts.append("-r" + (" -F" if option.files else " -f"))
    if option.help:
        parts.append(f"-d {_fish_quote(option.help)}")
    return " ".join(parts)


def _fish(prog: str, top: Scope) -> str:
    names = " ".join(c.name for c in top.commands)
    before = f"not __fish_seen_subcommand_from {names}"
    lines = [
        f"# fish completion for {prog}: generated by `{prog} completion fish`.",
        f"# Load it with: {prog} completion fish | source",
        f"complete -c {prog} -f",  # no file names but where an option asks for one
    ]
    for command in top.commands:
        described = f" -d {_fish_quote(command.help)}" if command.help else ""
        lines.append(f"complete -c {prog} -n {_fish_quote(before)} -a {command.name}{described}")
    lines += [_fish_option(prog, before, o) for o in top.options]
    for command in top.commands:
        inside = f"__fish_seen_subcommand_from {command.name}"
        lines += [_fish_option(prog, inside, o) for o in command.options]
        for positional in command.positionals:
            if positional.choices:
                choices = _fish_quote(" ".join(positional.choices))
                lines.append(f"complete -c {prog} -n {_fish_quote(inside)} -x -a {choices}")
    lines.append("")
    return "\n".join(lines)
