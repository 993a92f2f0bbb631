"""``mergelang completion bash|zsh|fish``: shell completion, and the hidden ``__complete`` verb.

The scripts are small: each shell hands the words typed so far to ``mergelang __complete``,
which answers one candidate per line. Everything else is decided here, from the argparse
parser itself (so a new verb or option completes without touching the scripts):

- the verbs, and each verb's options;
- an option's value: its choices (``--nan``, ``--device``), folders for ``DIR`` options,
  ``.merge`` files (and folders) for a recipe, any file for other paths;
- ``--set``: the variables the recipe on the command line uses (``NAME=``), then after
  ``NAME=`` the models found by name in ``--models-dir`` folders and ``$MERGELANG_MODELS``.

A candidate ending in ``/`` (a folder) or ``=`` (a variable) takes no space after it. For
bash, which splits the current word at ``=`` and ``:``, the part before the last of those is
left out of each candidate and special characters are backslash-escaped.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from mergelang.errors import MergelangError
from mergelang.io.locate import MODEL_SUFFIXES, MODELS_ENV, has_model_suffix

__all__ = ["SHELLS", "candidates", "register", "script"]

SHELLS = ("bash", "zsh", "fish")

_BASH = """\
# mergelang completion for bash: eval "$(mergelang completion bash)"
_mergelang() {
    local IFS=$'\\n'
    COMPREPLY=($(mergelang __complete bash --line "${COMP_LINE:0:$COMP_POINT}" 2>/dev/null))
    if [[ ${#COMPREPLY[@]} -eq 1 && ( ${COMPREPLY[0]} == */ || ${COMPREPLY[0]} == *= ) ]]; then
        compopt -o nospace 2>/dev/null
    fi
    return 0
}
complete -F _mergelang mergelang
"""

_ZSH = """\
#compdef mergelang
# mergelang completion for zsh: eval "$(mergelang completion zsh)" (after compinit)
_mergelang() {
    local -a found spaced joined
    local c
    found=("${(@f)$(mergelang __complete zsh -- "${(@)words[1,CURRENT]}" 2>/dev/null)}")
    for c in "${found[@]}"; do
        [[ -z $c ]] && continue
        if [[ $c == */ || $c == *= ]]; then joined+=("$c"); else spaced+=("$c"); fi
    done
    (( ${#spaced} )) && compadd -- "${spaced[@]}"
    (( ${#joined} )) && compadd -S '' -- "${joined[@]}"
    return 0
}
compdef _mergelang mergelang
"""

_FISH = """\
# mergelang completion for fish: mergelang completion fish | source
function __mergelang_complete
    set -l tokens (commandline -opc)
    set -l current (commandline -ct)
    mergelang __complete fish -- $tokens "$current" 2>/dev/null
end
complete -c mergelang -f -a '(__mergelang_complete)'
"""

_SCRIPTS = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}


def script(shell: str) -> str:
    """The completion script for ``shell`` (one of :data:`SHELLS`)."""
    return _SCRIPTS[shell]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description='Print a completion script. bash: eval "$(mergelang completion bash)" in '
        '~/.bashrc; zsh: eval "$(mergelang completion zsh)" in ~/.zshrc after compinit; '
        "fish: mergelang completion fish > ~/.config/fish/completions/mergelang.fish",
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell to complete for")
    parser.set_defaults(handler=_print_script)
    hidden = sub.add_parser("__complete")
    hidden.add_argument("shell", choices=SHELLS)
    hidden.add_argument("words", nargs=argparse.REMAINDER, help="--line LINE, or -- WORD...")
    hidden.set_defaults(handler=_complete)


def _print_script(args: argparse.Namespace) -> int:
    print(script(args.shell), end="")
    return 0


def _complete(args: argparse.Namespace) -> int:
    words: list[str] = list(args.words)
    if words[:1] == ["--line"]:
        words = _split_line(words[1] if len(words) > 1 else "")
    elif words[:1] == ["--"]:
        words = words[1:]
    if not words:
        return 0
    found = candidates(words)
    if args.shell == "bash":
        found = [_bash_word(c, words[-1]) for c in found]
    for candidate in found:
        print(candidate)
    return 0


def _split_line(line: str) -> list[str]:
    """The words of a command line cut at the cursor; the last is the word being typed
    (empty after a space). An unclosed quote is closed first."""
    for closing in ("", '"', "'"):
        try:
            words = shlex.split(line + closing)
        except ValueError:
            continue
        if not line or line[-1].isspace():
            words.append("")
        return words
    return line.split() + ([""] if not line or line[-1].isspace() else [])


_BASH_BREAKS = "=:@"
_BASH_SPECIAL = re.compile(r"([^\w@%+=:,./~-])")


def _bash_word(candidate: str, current: str) -> str:
    """``candidate`` as bash replaces its current word: without what precedes the last word
    break of ``current``, special characters escaped."""
    cut = max(current.rfind(c) for c in _BASH_BREAKS) + 1
    if cut and candidate.startswith(current[:cut]):
        candidate = candidate[cut:]
    return _BASH_SPECIAL.sub(r"\\\1", candidate)


# ---- the candidates -------------------------------------------------------------------------


def candidates(words: Sequence[str]) -> list[str]:
    """What may replace the last of ``words`` (the command line, program name first, the
    word being typed last), sorted within each kind."""
    from mergelang.cli import build_parser

    parser = build_parser()
    verbs = _verbs(parser)
    current = words[-1]
    if len(words) <= 2:
        if current.startswith("-"):
            return _matching(_option_strings(parser), current)
        return _matching((v for v in verbs if not v.startswith("_")), current)
    verb = verbs.get(words[1])
    if verb is None:
        return []
    return _VerbCompleter(verb, words[2:-1]).complete(current)


def _verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    found: list[str] = []
    for action in parser._actions:
        if action.help != argparse.SUPPRESS:
            found += [s for s in action.option_strings if s.startswith("--")]
    return found


def _matching(options: Iterable[str], prefix: str) -> list[str]:
    return sorted(o for o in dict.fromkeys(options) if o.startswith(prefix))


class _VerbCompleter:
    """The words of one verb typed so far, and what completes the next."""

    def __init__(self, parser: argparse.ArgumentParser, done: Sequence[str]) -> None:
        self.parser = parser
        self.options: dict[str, argparse.Action] = {}
        for action in parser._actions:
            for option in action.option_strings:
                self.options[option] = action
        self.positional_actions = [a for a in parser._actions if not a.option_strings]
        self.values: dict[str, list[str]] = {}
        self.positionals: list[str] = []
        self.pending: argparse.Action | None = None
        only_positionals = False
        for word in done:
            if self.pending is not None:
                self._note(self.pending, word)
                self.pending = None
            elif only_positionals or not word.startswith("-") or word == "-":
                self._positional(word)
            elif word == "--":
                only_positionals = True
            elif "=" in word and word.split("=", 1)[0] in self.options:
                option, value = word.split("=", 1)
                self._note(self.options[option], value)
            elif word in self.options and self.options[word].nargs != 0:
                self.pending = self.options[word]

    def _note(self, action: argparse.Action, value: str) -> None:
        self.values.setdefault(action.dest, []).append(value)

    def _positional_action(self) -> argparse.Action | None:
        """The positional argument the next positional word is for (one taking several
        words, like ``fmt``'s recipes, takes every word after its first too)."""
        actions = self.positional_actions
        index = len(self.positionals)
        if index < len(actions):
            return actions[index]
        if actions and actions[-1].nargs in ("*", "+"):
            return actions[-1]
        return None

    def _positional(self, word: str) -> None:
        action = self._positional_action()
        if action is not None:
            self._note(action, word)
        self.positionals.append(word)

    def complete(self, current: str) -> list[str]:
        if self.pending is not None:
            return self._value(self.pending, current)
        if current.startswith("--") and "=" in current:
            option, value = current.split("=", 1)
            action = self.options.get(option)
            if action is None or action.nargs == 0:
                return []
            return [f"{option}={v}" for v in self._value(action, value)]
        if current.startswith("-"):
            return _matching(_option_strings(self.parser), current)
        action = self._positional_action()
        return [] if action is None else self._value(action, current)

    def _value(self, action: argparse.Action, current: str) -> list[str]:
        if action.dest == "variables":
            return self._variable(current)
        if action.choices is not None:
            return _matching((str(c) for c in action.choices), current)
        if action.metavar == "DIR" or action.dest.endswith("_dir") or action.dest.endswith("dirs"):
            return _paths(current, lambda _: False)
        if action.dest in ("recipe", "recipes"):
            return _paths(current, lambda name: name.endswith(".merge"))
        if action.type in (int, float):
            return []
        return _paths(current, lambda _: True)

    def _variable(self, current: str) -> list[str]:
        if "=" not in current:
            return _matching((f"{name}=" for name in self._recipe_variables()), current)
        name, partial = current.split("=", 1)
        return [f"{name}={model}" for model in _matching(self._model_names(), partial)]

    def _recipe_variables(self) -> list[str]:
        recipes = self.values.get("recipe", [])
        if not recipes or recipes[0] == "-":
            return []
        return recipe_variables(Path(recipes[0]))

    def _model_names(self) -> list[str]:
        folders = [*self.values.get("models_dirs", [])]
        folders += [f for f in os.environ.get(MODELS_ENV, "").split(os.pathsep) if f]
        return model_names([Path(f).expanduser() for f in folders])


def recipe_variables(path: Path) -> list[str]:
    """The variables (``$NAME``, ``__NAME__``) the recipe at ``path`` uses, sorted; none when
    it cannot be read. A recipe with a syntax error is searched as text."""
    from mergelang.lang import ast
    from mergelang.lang.parser import parse

    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return []
    try:
        recipe = parse(text)
    except MergelangError:
        found = re.findall(r"\$([A-Za-z_]\w*)|__([A-Za-z_]\w*?)__", text)
        return sorted({a or b for a, b in found if not re.fullmatch(r"O\d+", a or b)})
    names: set[str] = set()
    _collect_variables(recipe, ast.Variable, names)
    return sorted(names)


def _collect_variables(node: object, kind: type, names: set[str]) -> None:
    """Every ``kind`` node below ``node`` (a dataclass tree with tuples of nodes)."""
    import dataclasses

    if isinstance(node, kind):
        names.add(node.name)  # type: ignore[attr-defined]
    if isinstance(node, tuple):
        for item in node:
            _collect_variables(item, kind, names)
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        for item in dataclasses.fields(node):
            _collect_variables(getattr(node, item.name), kind, names)


def model_names(folders: Sequence[Path]) -> list[str]:
    """The names models are found by in ``folders`` (their paths below the folder without
    the model suffix, ``/``-separated), sorted."""
    found: set[str] = set()
    for folder in folders:
        for root, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(root).relative_to(folder)
            for filename in filenames:
                if has_model_suffix(filename):
                    found.add((rel / _stem(filename)).as_posix())
    return sorted(found)


def _stem(filename: str) -> str:
    lowered = filename.lower()
    for suffix in MODEL_SUFFIXES:
        if lowered.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def _paths(current: str, keep: Callable[[str], bool]) -> list[str]:
    """Folders (with a ``/``) and the files ``keep(name)`` accepts, beside ``current``."""
    folder, sep, prefix = current.rpartition("/")
    lead = f"{folder}/" if sep else ""
    where = Path(os.path.expanduser(folder or "/")) if sep else Path(".")
    try:
        entries = sorted(os.scandir(where), key=lambda e: e.name)
    except OSError:
        return []
    found: list[str] = []
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        if entry.name.startswith(".") and not prefix.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        if is_dir:
            found.append(f"{lead}{entry.name}/")
        elif keep(entry.name):
            found.append(f"{lead}{entry.name}")
    return found
