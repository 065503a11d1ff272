"""Shell completion for `compactsim`, written from its own argparse parser: the commands,
their subcommands and the options of each, so completion never falls behind the parser.

    eval "$(compactsim completion bash)"     # ~/.bashrc
    eval "$(compactsim completion zsh)"      # ~/.zshrc (through bashcompinit)

Completes words only (commands, subcommands, --options, an option's fixed choices); file
names where nothing else fits.
"""

from __future__ import annotations

import argparse


def _sub(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:   # argparse has no public walk of its tree
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))


def _choices(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    return {o: [str(c) for c in a.choices] for a in parser._actions if a.choices
            and a.option_strings and not isinstance(a, argparse._SubParsersAction)
            for o in a.option_strings}


def _tree(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, str, dict]]:
    """(command path, words, option choices) of `parser` and every parser below it."""
    subs = _sub(parser)
    words = " ".join([*subs, *_options(parser)])
    out = [(path, words, _choices(parser))]
    for name, p in subs.items():
        out += _tree(p, f"{path} {name}".strip())
    return out


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of `parser` for `shell` ("bash" or "zsh")."""
    prog = parser.prog
    fn = f"_{prog.replace('-', '_')}_complete"
    cases, choice_cases, steps = [], [], []
    for path, _, _ in _tree(parser):
        names = " ".join(_sub_names(parser, path))
        if names:   # a word naming one of these subcommands goes one level down
            steps.append(f'            "{path}") [[ " {names} " == *" $w "* ]] && '
                         f'path="${{path:+$path }}$w" ;;')
    for path, words, choices in _tree(parser):
        cases.append(f'        "{path}") words="{words}" ;;')
        for opt, values in choices.items():
            choice_cases.append(f'        "{path}|{opt}") words="{" ".join(values)}" ;;')
    body = f'''{fn}() {{
    local cur prev path="" i w words=""
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    # the commands typed so far: words that name a subcommand of the path before them
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        [[ "$w" == -* ]] && continue
        case "$path" in
{chr(10).join(steps)}
        esac
    done
    case "$path|$prev" in
{chr(10).join(choice_cases)}
        *)
            case "$path" in
{chr(10).join(cases)}
            esac ;;
    esac
    if [[ -n "$words" ]]; then
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
    fi
    [[ ${{#COMPREPLY[@]}} -eq 0 ]] && COMPREPLY=($(compgen -f -- "$cur"))
    return 0
}}
'''
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + body + \
            f"complete -F {fn} {prog}\n"
    return body + f"complete -F {fn} {prog}\n"


def _sub_names(parser: argparse.ArgumentParser, path: str) -> list[str]:
    p = parser
    for name in path.split():
        p = _sub(p)[name]
    return list(_sub(p))
