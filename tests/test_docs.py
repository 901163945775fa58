"""The documentation holds as written: the README's Python example runs end to end, every relative
link and anchor resolves, every `make` target named exists, every flag of an `edgekit` command in a
code block is one the command accepts, and the generated tables are the tools' output."""

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", "benchmarks/README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))
)


def _read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def _blocks(text):
    """(language, body) of each fenced code block, and the text outside them."""
    blocks, prose, lang, body = [], [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(body)))
                lang = None
        elif lang is None:
            prose.append(line)
        else:
            body.append(line)
    return blocks, "\n".join(prose)


def _anchors(text):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for title in re.findall(r"(?m)^#+ (.+)$", _blocks(text)[1]):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def _links(text):
    return re.findall(r"\]\(([^)\s]+)\)", _blocks(text)[1])


def test_the_readme_is_short():
    assert len(_read("README.md").encode()) <= 12 * 1024


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for link in _links(_read(page)):
        if re.match(r"[a-z]+:", link):
            continue  # http(s):, mailto:
        target, _, anchor = link.partition("#")
        path = (
            os.path.normpath(os.path.join(ROOT, os.path.dirname(page), target)) if target else os.path.join(ROOT, page)
        )
        if not os.path.exists(path):
            broken.append(link)
        elif anchor and path.endswith(".md") and anchor not in _anchors(_read(os.path.relpath(path, ROOT))):
            broken.append(link)
    assert not broken, f"{page}: broken links {broken}"


def test_every_make_target_mentioned_exists():
    makefile = _read("Makefile")
    targets = set(re.findall(r"(?m)^([\w-]+):", makefile))
    named = {t for page in PAGES for t in re.findall(r"`make ([\w-]+)`", _read(page))}
    named |= set(re.findall(r"make ([\w-]+)", _read(".ci/run")))
    assert named and not named - targets, f"no such make target: {sorted(named - targets)}"


def _commands(text):
    """Each `edgekit COMMAND ...` line of a code block, continuation lines joined."""
    out = []
    for lang, block in _blocks(text)[0]:
        if lang not in ("", "sh"):
            continue
        current = None
        for line in block.splitlines():
            if line.startswith("edgekit "):
                current = line.split("#")[0]
                out.append(current)
            elif current is not None and line.startswith(" ") and line.strip():
                out[-1] += " " + line.split("#")[0]
            else:
                current = None
    return out


@pytest.mark.parametrize("page", ["README.md"] + [p for p in PAGES if p.startswith("docs")])
def test_every_command_in_a_code_block_uses_flags_the_command_accepts(page):
    from edgekit.app.cli import COMMANDS, build_parser

    commands = _commands(_read(page))
    bad = []
    for line in commands:
        words = line.split()
        name = words[1]
        assert name in COMMANDS, f"{page}: unknown command in {line!r}"
        parser = build_parser(name).command_parser
        if name == "device":
            parser = parser.commands[words[2]]
        for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", line):
            if flag not in parser.options:
                bad.append(f"edgekit {name} {flag}")
    assert not bad, f"{page}: flags the commands do not accept: {bad}"


def test_readme_commands_are_listed_and_found():
    assert {c.split()[1] for c in _commands(_read("README.md"))} >= {"demo", "export", "optimize", "bench", "inspect"}


@pytest.mark.parametrize("page, name", [("docs/models.md", "models"), ("docs/mcu.md", "boards")])
def test_generated_tables_are_the_tools_output(page, name):
    from readme import SECTIONS, section  # tools/readme.py (conftest puts tools/ on the path)

    assert section(_read(page), name).strip() == SECTIONS[name]().strip(), (
        f"the {name} table of {page} is stale: run `make readme`"
    )


def test_the_readme_python_example_runs_as_written(tmp_path):
    example = next(b for lang, b in _blocks(_read("README.md"))[0] if lang == "python" and b.startswith("import keras"))
    proc = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fully integer: yes" in proc.stdout and "p50" in proc.stdout
    assert (tmp_path / "model_int8.tflite").is_file()
