"""The README's first page holds: its library example and docs/library.md's torch examples print what
their ``# ->`` comments say, its `lrsched show` output is the command's, and every relative link in
README.md and docs/ resolves."""

from __future__ import annotations

import re
import subprocess
import textwrap

import pytest
from helpers import PYTHON, REPO, child_env

README = REPO / "README.md"


def block(language: str, after: str) -> str:
    """The first fenced ``language`` block after the text ``after`` in the README."""
    text = README.read_text()
    start = text.index(f"```{language}\n", text.index(after)) + len(language) + 4
    return text[start : text.index("```", start)]


def promised(code: str) -> list[str]:
    """What an example says it prints: the text after ``# ->`` on each line that has it, in order."""
    return [line.split("# -> ", 1)[1].strip() for line in code.splitlines() if "# -> " in line]


def printed(code: str) -> list[str]:
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=child_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def test_the_library_example_prints_what_it_says() -> None:
    """0.04 -> 0.4 is what the weight decay does on a default AdamW (it was 0.01 -> 0.1 before one rule)."""
    code = block("python", "## The library in ten lines")
    assert promised(code) == ["1e-06 0.4"]
    assert printed(code) == promised(code)


def torch_examples() -> list[str]:
    """Every python block of docs/library.md's torch side, indented ones included."""
    text = (REPO / "docs" / "library.md").read_text()
    section = text[text.index("## The torch side") :]
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", section, flags=re.S | re.M)
    return [textwrap.dedent("\n".join(line[len(indent) :] for line in body.splitlines())) for indent, body in blocks]


def test_library_md_has_three_torch_examples() -> None:
    assert len(torch_examples()) == 3 and all(promised(code) for code in torch_examples())


@pytest.mark.parametrize("index", range(3))
def test_each_torch_example_of_library_md_prints_what_it_says(index: int) -> None:
    code = torch_examples()[index]
    assert printed(code) == promised(code)


def test_the_show_example_is_what_lrsched_show_prints() -> None:
    shown = block("console", "## Look before you train")
    command, expected = shown.split("\n", 1)
    args = command.removeprefix("$ lrsched ").split()
    code = "import sys; from lrsched.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([PYTHON, "-c", code, *args], capture_output=True, text=True, env=child_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(expected.rstrip("\n")), done.stdout


def test_readme_is_a_first_page() -> None:
    assert len(README.read_text().splitlines()) <= 150


@pytest.mark.parametrize("page", [README, *sorted((REPO / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_every_relative_link_resolves(page) -> None:  # type: ignore[no-untyped-def]
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{page.name}: {target}"
