"""The README's first page holds: its library example and docs/library.md's torch examples print what
their ``# ->`` comments say, its `lrsched show` output is the command's, and every relative link in
README.md and docs/ resolves."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import textwrap
from typing import Any

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


# --- every figure the README states comes from a results file (and the docs agree) ----------------

RESULTS = REPO / "bench" / "results"


def results(name: str) -> Any:
    return json.loads((RESULTS / f"{name}.json").read_text())


def readme_text() -> str:
    return " ".join(README.read_text().split())  # one line: a figure may wrap


def test_the_train_headline_is_the_results_file() -> None:
    """README.md and docs/train.md say what docs/figures/train_3ep.json (bench/readme_run.py) holds."""
    run = json.loads((REPO / "docs" / "figures" / "train_3ep.json").read_text())
    assert run["command"].endswith(
        "--num_epochs 3 --max_train_samples 1280 --max_eval_samples 512 --output_dir runs/readme-3ep"
    )
    test, plan, best = run["test"], run["plan"], run["best"]
    text = readme_text()
    assert f"resolved to {plan['shape']}, peak {plan['base_lr']:g}, {plan['warmup_steps']} warm-up steps" in text
    assert f"**{test['accuracy']:.3f} test accuracy**" in text
    assert f"(the epoch-{best['epoch']:g} model)" in text
    assert f"against {run['majority_baseline_test']:.3f} for the majority class" in text
    assert len(re.findall(r"\*\*0\.\d{3} test accuracy\*\*", text)) == 1, "one headline, from the file"
    train_md = (REPO / "docs" / "train.md").read_text()
    section = train_md[train_md.index("## A 3-epoch run on 1,280 tweets") :]
    for h in run["validation"]:
        scores = f"{h['loss']:.3f} | {h['accuracy']:.3f} | {h['macro_f1']:.3f}"
        row = f"| validation, epoch {h['epoch']:g} (step {h['step']}) | {scores} |"
        assert row in section, row
    scores = f"{test['loss']:.3f} | **{test['accuracy']:.3f}** | **{test['macro_f1']:.3f}**"
    assert f"| **test** (best = epoch {best['epoch']:g}) | {scores} |" in section
    assert f'| majority class ("negative"), test | | {run["majority_baseline_test"]:.3f} | |' in section


def test_the_phase5_headline_is_the_recipe_results_file() -> None:
    from lrsched.recipes.dino.flags import RECIPES

    recipe = results("dino_cpu_recipe")["runs"]["10-minute recipe (make demo-dino)"]
    pairs = recipe["flags"]
    measured = {pairs[i]: pairs[i + 1] for i in range(0, len(pairs) - 1, 2) if pairs[i].startswith("--")}
    ours = dict(zip(RECIPES["cpu-demo"][::2], RECIPES["cpu-demo"][1::2]))
    assert {k: float(v) if k != "--preset" else v for k, v in ours.items() if k in measured} == {
        k: float(v) if k != "--preset" else v for k, v in measured.items() if k in ours
    }, "make demo-dino (--recipe cpu-demo) is the recipe measured"
    text = readme_text()
    assert f"from {recipe['init']:.4f} to **{recipe['final']:.3f}** in {recipe['cpu_min']:.1f} CPU minutes" in text


def test_the_benchmark_lines_are_the_results_files() -> None:
    text = readme_text()
    speed = results("throughput_finetune")["speedup_ratio_of_medians"]
    assert (
        f"train.py {speed['hf_trainer']:.2f}x HF `Trainer`'s defaults, level ({speed['hf_trainer_grouped']:.2f}x)"
        in text
    )
    ratio = results("data_pipeline")["ratio_ours_over"]["official"]
    assert f"{ratio['0']:.2f}x, {ratio['1']:.2f}x and {ratio['2']:.2f}x the images/s of DINO's own pipeline" in text
    timing = results("overhead")["timing"]["100"]
    assert (
        f"HF's LambdaLR costs {timing['hf']['ratio']:.1f}x and torch's `SequentialLR` {timing['torch']['ratio']:.1f}x"
        in text
    )
    bf16 = results("bf16_cpu")["runs"]
    by_preset: dict[str, dict[bool, list[float]]] = {}
    for r in bf16:
        by_preset.setdefault(r["preset"], {}).setdefault(r["bf16"], []).append(r["images_per_s"])
    ratios = [statistics.median(v[True]) / statistics.median(v[False]) for v in by_preset.values()]
    assert f"{min(ratios):.1f}-{max(ratios):.1f}x fp32's images/s on a CPU with AVX512-BF16" in text


def test_the_readme_says_how_to_use_several_gpus() -> None:
    text = readme_text()
    found = re.search(r"`torchrun --nproc_per_node \d+ (train\.py|phase5_big_run\.py) [^`]*`", text)
    assert found is not None and (REPO / found.group(1)).is_file()
