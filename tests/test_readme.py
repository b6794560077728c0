"""The README's first page holds: its library example runs and ends where it says, its `lrsched show`
output is the command's, and every relative link in README.md and docs/ resolves."""

from __future__ import annotations

import re
import subprocess

import pytest
from helpers import PYTHON, REPO, child_env

README = REPO / "README.md"


def block(language: str, after: str) -> str:
    """The first fenced ``language`` block after the text ``after`` in the README."""
    text = README.read_text()
    start = text.index(f"```{language}\n", text.index(after)) + len(language) + 4
    return text[start : text.index("```", start)]


def test_the_library_example_runs_and_ends_at_the_floor() -> None:
    code = block("python", "## The library in ten lines") + "\nprint(opt.param_groups[0]['lr'], sched.last_epoch)\n"
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=child_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    lr, step = done.stdout.split()
    assert float(lr) == pytest.approx(1e-6, rel=1e-12) and int(step) == 1000


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
