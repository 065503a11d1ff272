"""The prose names only what the repository has, and points nowhere outside it.

- every `make TARGET` of README.md and docs/*.md is a Makefile target;
- every `compactsim COMMAND [SUBCOMMAND]` in README.md's shell blocks is a command of the
  command line, and each `--flag` given to it is one of that command's options;
- every `--flag` README.md gives `compactsim-server` (in its shell blocks and its tables of
  server flags) is one of the server's options;
- every repository path the docs and sim/'s docstrings name (`sim/NAME.py`,
  `server/...`, `tests/...`, `deploy/...`, the `(NAME.py)` modules of docs/model.md's
  headings) exists;
- docs/model.md's table of kernel switches has a row for each switch of KernelConfig;
- no tracked file cites documents that a clone does not have (a sibling `shared`
  folder, the machine's work directory, or documents by names that are not in the repo).
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import pytest

from compactsim.client import cli
from compactsim.server import main as server_main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = ROOT / "README.md"


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]


def shell_lines(path: Path) -> list[str]:
    """The commands of a Markdown file's ```sh blocks, continuation lines joined, comments
    dropped, `a; b` split."""
    lines, block, pending = [], False, ""
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            block = line.strip() == "```sh"
            continue
        if not block:
            continue
        line = pending + line.split("  #")[0].split(" # ")[0]
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        lines.extend(part.strip() for part in line.split(";"))
    return lines


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+):", text, re.M))


def test_every_make_target_the_docs_name_exists():
    targets = makefile_targets()
    named = {(doc.name, t) for doc in DOCS
             for t in re.findall(r"`make ([a-z][a-z0-9_-]*)", doc.read_text())}
    named |= {(README.name, m.group(1)) for line in shell_lines(README)
              for m in [re.match(r"make ([a-z][a-z0-9_-]*)", line)] if m}
    assert named, "the docs name no make target: the pattern is broken"
    missing = sorted((doc, t) for doc, t in named if t not in targets)
    assert not missing, f"make targets named in the docs but not in the Makefile: {missing}"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


def _compactsim_commands() -> list[tuple[str, list[str]]]:
    """(line, words after `compactsim`) of every README shell line that runs the CLI."""
    found = []
    for line in shell_lines(README):
        for m in re.finditer(r"(?:^|\$\(|\s)compactsim\s+([^|>)]*)", line):
            found.append((line, m.group(1).split()))
    return found


def test_every_compactsim_command_and_flag_the_readme_names_exists():
    top = cli._parser()
    commands = _compactsim_commands()
    assert len(commands) > 10, "the README's commands were not found: the pattern is broken"
    problems = []
    for line, words in commands:
        parser, path = top, ["compactsim"]
        for word in words:
            subs = _subcommands(parser)
            if not subs or word.startswith("-"):
                break
            if word not in subs:
                problems.append(f"{' '.join(path)} has no command {word!r}: {line}")
                break
            parser, path = subs[word], [*path, word]
        else:
            if _subcommands(parser):
                problems.append(f"{' '.join(path)} needs a subcommand: {line}")
        options = _options(parser) | _options(top)
        for flag in (w.split("=")[0] for w in words if w.startswith("-")):
            if flag not in options:
                problems.append(f"{' '.join(path)} has no option {flag}: {line}")
    assert not problems, "\n".join(problems)


def test_every_server_flag_the_readme_names_exists(capsys):
    with pytest.raises(SystemExit):
        server_main.parse_args(["--help"])
    options = set(re.findall(r"--[a-z][a-z0-9-]*", capsys.readouterr().out))
    text = README.read_text()
    named = {f for line in shell_lines(README) if line.startswith("compactsim-server")
             for f in re.findall(r"\s(--[a-z][a-z0-9-]*)", line)}
    section = text[text.index("Server flags"):text.index("Traces to replay")]
    named |= set(re.findall(r"`(--[a-z][a-z0-9-]*)", section))
    client_flags = {"--server", "--token", "--ca-cert", "--server-name", "--timeout"}
    named -= client_flags
    assert "--max-queue" in named, "the server flags were not found: the pattern is broken"
    missing = sorted(named - options)
    assert not missing, f"server flags in README.md that compactsim-server lacks: {missing}"


PATH = re.compile(r"(?<![\w./-])((?:sim|server|client|codec|tests|deploy|bench|docs|proto|"
                  r"validation)/[A-Za-z0-9_./-]*[A-Za-z0-9_])")
# Named in the docs as files the reader writes, not files of the repository.
NOT_IN_REPO = {"deploy/k8s/overlays/lab/tokens"}


def _docstrings_of_sim() -> str:
    import ast
    return "\n".join(ast.get_docstring(ast.parse(p.read_text())) or ""
                     for p in sorted((ROOT / "sim").glob("*.py")))


def test_every_repository_path_the_docs_name_exists():
    texts = {doc.relative_to(ROOT).as_posix(): doc.read_text() for doc in DOCS}
    texts["sim/*.py docstrings"] = _docstrings_of_sim()
    missing = sorted({(where, p) for where, text in texts.items()
                      for p in PATH.findall(text)
                      if p not in NOT_IN_REPO and "{" not in p and not (ROOT / p).exists()})
    model = (ROOT / "docs" / "model.md").read_text()
    modules = {m for heading in re.findall(r"^## .*$", model, re.M)
               for m in re.findall(r"`([a-z_]+\.py)`", heading)}
    assert modules, "docs/model.md's headings name no module: the pattern is broken"
    missing += sorted(("docs/model.md", f"sim/{m}") for m in modules
                      if not (ROOT / "sim" / m).exists())
    assert not missing, f"paths named in the docs that the repository lacks: {missing}"


# Documents that live outside the repository, by the ways code and prose have cited them.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "/" + "work/", "kernel-mm-" + "reference",
                               "cost-" + r"model\.md", r"(?<![\w/-])design\.md",
                               r"style\.md", "real-" + "data/", r"the reference,? section"]),
                     re.I)


def test_nothing_points_outside_the_repository():
    hits = []
    for path in tracked_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "references to documents outside the repository:\n" + "\n".join(hits)


def test_model_md_explains_every_kernel_switch():
    """docs/model.md's switch table says what each switch stands for: all of them, and only
    switches the config has."""
    import dataclasses

    from compactsim.sim.config import KernelConfig
    switches = {f.name for f in dataclasses.fields(KernelConfig)} - {"profile"}
    model = (ROOT / "docs" / "model.md").read_text()
    section = model[model.index("## Kernel releases as switches"):]
    section = section[:section.index("\n## ")]
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    assert not switches - rows, f"switches docs/model.md does not explain: {switches - rows}"
    assert not rows - switches, f"docs/model.md explains unknown switches: {rows - switches}"
