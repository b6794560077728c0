"""The bad-input table: every flag of phase5_big_run.py, train.py and ``lrsched show/plot``.

Each ``Case`` is one command line that must be refused: exit status 2, one line on stderr
naming the flag, no traceback, nothing created or changed. ``{in}`` in an argument is the
folder of prepared inputs (broken files, folders); ``{out}`` the output folder of the case.
``write_reliability_table.py`` turns this table (and the test results) into docs/reliability.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PROGRAMS = ("phase5_big_run.py", "train.py", "lrsched show", "lrsched plot")


@dataclass(frozen=True)
class Case:
    program: str
    flag: str
    args: tuple[str, ...]
    rule: str
    names: str = ""
    """What the error line must contain besides the flag ('' = the bad value itself)."""
    generated: bool = False
    """Made from ``RULES`` (a value the parser itself refuses), not written out by hand."""

    @property
    def id(self) -> str:
        short = {"phase5_big_run.py": "dino", "train.py": "train", "lrsched show": "show", "lrsched plot": "plot"}
        shown = " ".join(self.args).replace("{in}/", "").replace("{out}/", "")
        return f"{short[self.program]}:{shown}"

    @property
    def value(self) -> str:
        if len(self.args) == 1 and "=" in self.args[0]:
            return self.args[0].split("=", 1)[1]
        return " ".join(self.args[1:]) if len(self.args) > 1 else "(none)"


# Bad values by the rule a flag's value must meet.
RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "pos_float": ("finite number > 0", ("0", "-1", "nan", "inf", "-inf", "abc", "")),
    "nonneg_float": ("finite number >= 0", ("-1", "-1e-9", "nan", "inf", "abc")),
    "timeout": ("number in [0, 86400]", ("-1", "86400.5", "1e10", "nan", "inf", "abc")),
    "pos_int": ("integer >= 1", ("0", "-3", "1.5", "abc", "nan")),
    "nonneg_int": ("integer >= 0", ("-1", "2.5", "abc", "inf")),
    "unit": ("number in (0, 1]", ("0", "1.5", "-0.5", "nan", "x")),
    "prob": ("number in [0, 1)", ("1", "-0.1", "nan", "inf")),
    "ratio": ("decimal in [0, 1)", ("1", "-0.1", "nan", "2", "1/0")),
    "epochs": ("decimal > 0", ("0", "-1", "nan", "inf", "abc", "-0.5")),
    "strategy": ("one of auto, constant, linear, cosine, cosine_restarts, wsd", ("cosin", "warmup", "COSINE", "")),
    "decay_ratio": ("decimal in (0, 1]", ("0", "1.5", "-0.1", "nan", "abc")),
    "decay_type": ("one of cosine, linear, 1-sqrt", ("sqrt", "COSINE", "")),
    "save_strategy": ("one of epoch, no", ("steps", "NO", "")),
    "best_metric": ("one of accuracy, macro_f1, loss", ("f1", "ACC", "")),
    "true_false": ("true or false", ("maybe", "2", "")),
    "knn_features": ("one of cls, cls+patch", ("patch", "CLS", "")),
    "recipe": ("one of cpu-demo", ("gpu", "CPU-DEMO", "")),
    "switch": ("takes no value", ("=yes",)),
}

DINO_FLAGS = {
    "--lr": "pos_float",
    "--warmup-steps": "nonneg_int",
    "--warmup-ratio": "ratio",
    "--min-lr": "nonneg_float",
    "--max-steps": "pos_int",
    "--replan": "switch",
    "--decay-ratio": "decay_ratio",
    "--decay-type": "decay_type",
    "--weight-decay": "pos_float",
    "--weight-decay-end": "nonneg_float",
    "--momentum-teacher": "unit",
    "--teacher-temp": "pos_float",
    "--warmup-teacher-temp": "pos_float",
    "--warmup-teacher-temp-steps": "nonneg_int",
    "--freeze-last-layer-steps": "nonneg_int",
    "--clip-grad": "nonneg_float",
    "--layer-decay": "unit",
    "--center-momentum": "prob",
    "--student-temp": "pos_float",
    "--koleo-weight": "nonneg_float",
    "--out-dim": "pos_int",
    "--global-size": "pos_int",
    "--local-size": "pos_int",
    "--local-crops": "nonneg_int",
    "--workers": "nonneg_int",
    "--data-timeout": "timeout",
    "--lr-ref-batch": "pos_int",
    "--accept-data-change": "switch",
    "--follow-links": "switch",
    "--batch-size": "pos_int",
    "--seed": "nonneg_int",
    "--eval-every": "nonneg_int",
    "--knn-train-samples": "nonneg_int",
    "--knn-test-samples": "nonneg_int",
    "--knn-features": "knn_features",
    "--no-knn": "switch",
    "--save-every": "nonneg_int",
    "--keep-checkpoints": "pos_int",
    "--recipe": "recipe",
    "--bf16": "switch",
}

TRAIN_FLAGS = {
    "--num_epochs": "epochs",
    "--learning_rate": "pos_float",
    "--lr_strategy": "strategy",
    "--scale_lr_for_short_training": "switch",
    "--cosine_restarts": "switch",
    "--warmup_ratio": "ratio",
    "--warmup_steps": "nonneg_int",
    "--num_cycles": "pos_float",
    "--min_lr": "nonneg_float",
    "--max_steps": "pos_int",
    "--decay_ratio": "decay_ratio",
    "--decay_type": "decay_type",
    "--max_train_samples": "pos_int",
    "--max_eval_samples": "pos_int",
    "--max_test_samples": "pos_int",
    "--max_seq_length": "pos_int",
    "--no_group_by_length": "switch",
    "--per_device_train_batch_size": "pos_int",
    "--per_device_eval_batch_size": "pos_int",
    "--gradient_accumulation_steps": "pos_int",
    "--weight_decay": "nonneg_float",
    "--max_grad_norm": "nonneg_float",
    "--bf16": "switch",
    "--seed": "nonneg_int",
    "--overwrite_output_dir": "switch",
    "--save_steps": "pos_int",
    "--save_strategy": "save_strategy",
    "--save_total_limit": "pos_int",
    "--disable_tqdm": "switch",
    "--metric_for_best_model": "best_metric",
    "--greater_is_better": "true_false",
}

SHOW_FLAGS = {
    "--lr": "pos_float",
    "--warmup-steps": "nonneg_int",
    "--min-lr": "nonneg_float",
    "--max-steps": "pos_int",
    "--replan": "switch",
    "--num-epochs": "epochs",
    "--learning-rate": "pos_float",
    "--lr-strategy": "strategy",
    "--scale-lr-for-short-training": "switch",
    "--cosine-restarts": "switch",
    "--warmup-ratio": "ratio",
    "--num-cycles": "pos_float",
    "--steps-per-epoch": "pos_int",
    "--steps": "pos_int",
    "--decay-ratio": "decay_ratio",
    "--decay-type": "decay_type",
    "--max-train-samples": "pos_int",
    "--per-device-train-batch-size": "pos_int",
    "--gradient-accumulation-steps": "pos_int",
    "--json": "switch",
    "--every": "pos_int",
    "--lr-ref-batch": "pos_int",
}


def _other_program_flags() -> dict[str, str]:
    """The programs' other flags, which ``lrsched show/plot`` accept: a switch takes no value, the rest need one."""
    from lrsched.programs import installed

    def values(keywords: Mapping[str, object]) -> int:
        return 0 if keywords.get("action") in ("store_true", "store_false") else 1

    tables = [{**{n: values(kw) for n, kw in p.flags.items()}, **p.other_flags} for p in installed()]
    names = {f"--{n.replace('_', '-')}": k for table in tables for n, k in table.items()}
    return {flag: "switch" if k == 0 else "value" for flag, k in names.items() if flag not in SHOW_FLAGS}


def _value_cases(program: str, table: dict[str, str]) -> list[Case]:
    cases = []
    for flag, kind in table.items():
        rule, values = RULES[kind]
        for v in values:
            if kind == "switch":
                cases.append(Case(program, flag, (f"{flag}{v}",), rule, names=flag, generated=True))
            elif v.startswith("-") and not v.lstrip("-").replace(".", "").isdigit():
                # argparse reads "-inf" or "-1e-9" after a flag as another flag: give it with "="
                cases.append(Case(program, flag, (f"{flag}={v}",), rule, names=v, generated=True))
            else:
                cases.append(Case(program, flag, (flag, v), rule, names="" if v else flag, generated=True))
        if kind != "switch":
            cases.append(Case(program, flag, (flag,), "needs a value", names=flag, generated=True))
    return cases


def _dino_cases() -> list[Case]:
    p = "phase5_big_run.py"
    cases = _value_cases(p, DINO_FLAGS)
    cases += [
        Case(p, "--preset", ("--preset", "huge"), "one of the presets", "huge"),
        Case(p, "--preset", ("--preset",), "needs a value", "--preset"),
        Case(p, "--device", ("--device", "quantum"), "a torch device", "quantum"),
        Case(p, "--device", ("--device", "cuda:7"), "a device this machine has", "cuda"),
        Case(p, "--global-crops-scale", ("--global-crops-scale", "0.9", "0.3"), "low <= high", "0.9"),
        Case(p, "--global-crops-scale", ("--global-crops-scale", "0.5"), "two numbers", "--global-crops-scale"),
        Case(p, "--global-crops-scale", ("--global-crops-scale", "0", "1"), "numbers in (0, 1]", "0"),
        Case(p, "--local-crops-scale", ("--local-crops-scale", "0.5", "0.05"), "low <= high", "0.5"),
        Case(p, "--local-crops-scale", ("--local-crops-scale", "nan", "0.4"), "numbers in (0, 1]", "nan"),
        Case(p, "--min-lr", ("--min-lr", "0.1", "--lr", "0.01"), "min-lr <= lr", "0.1"),
        Case(p, "--lr-ref-batch", ("--lr-ref-batch", "100000", "--min-lr", "1e-4"), "peak >= --min-lr", "100000"),
        Case(p, "--warmup-steps", ("--warmup-steps", "4"), "fewer than --max-steps (4)", "4"),
        Case(p, "--warmup-steps", ("--warmup-steps", "9"), "fewer than --max-steps (4)", "9"),
        Case(p, "--warmup-ratio", ("--warmup-ratio", "0.5"), "not with --warmup-steps", "0.5"),
        Case(p, "--warmup-teacher-temp-steps", ("--warmup-teacher-temp-steps", "4"), "fewer than --max-steps", "4"),
        Case(p, "--global-size", ("--global-size", "2"), "at least the patch size", "2"),
        Case(p, "--local-size", ("--local-size", "3"), "at least the patch size", "3"),
        Case(p, "--batch-size", ("--data-dir", "{in}/images", "--batch-size", "64"), "<= images in the data", "64"),
        Case(p, "--batch-size", ("--batch-size", "60000", "--local-crops", "6"), "a step that fits in memory", "60000"),
        Case(p, "--local-crops", ("--local-crops", "1000000"), "a step that fits in memory", "1000000"),
        Case(p, "--out-dim", ("--out-dim", "100000000"), "a step that fits in memory", "100000000"),
        Case(p, "--data-dir", ("--data-dir", "{in}/missing"), "an existing folder", "missing"),
        Case(p, "--data-dir", ("--data-dir", "{in}/good.csv"), "a folder, not a file", "good.csv"),
        Case(p, "--data-dir", ("--data-dir", "{in}/empty"), "a folder with images", "empty"),
        Case(p, "--data-dir", ("--data-dir", "{in}/fake_images"), "readable images", "fake_images"),
        Case(p, "--resume", ("--resume", "{in}/missing.pt"), "an existing checkpoint", "missing.pt"),
        Case(p, "--resume", ("--resume", "{in}/empty"), "a file, not a folder", "empty"),
        Case(p, "--resume", ("--resume", "{in}/zero.pt"), "a loadable checkpoint (empty file)", "zero.pt"),
        Case(p, "--resume", ("--resume", "{in}/junk.pt"), "a loadable checkpoint (random bytes)", "junk.pt"),
        Case(p, "--resume", ("--resume", "{in}/dangling.pt"), "a loadable checkpoint (dangling link)", "dangling"),
        Case(p, "--resume", ("--resume", "{in}/good.csv"), "a checkpoint, not a CSV", "good.csv"),
        Case(p, "--resume", ("--resume",), "needs a value", "--resume"),
        Case(p, "--output-dir", ("--output-dir", "{in}/good.csv"), "a folder, not a file", "good.csv"),
        Case(p, "--output-dir", ("--output-dir",), "needs a value", "--output-dir"),
        Case(p, "--unknown-flag", ("--unknown-flag", "1"), "no such flag", "--unknown-flag"),
        Case(p, "--lr", ("--lr", "1e-3", "--lr", "abc"), "last value checked too", "abc"),
    ]
    return cases


def _train_cases() -> list[Case]:
    p = "train.py"
    cases = _value_cases(p, TRAIN_FLAGS)
    cases += [
        Case(p, "--cosine_restarts", ("--cosine_restarts", "--lr_strategy", "linear"), "not with another strategy"),
        Case(p, "--warmup_steps", ("--warmup_steps", "4"), "fewer than the 4 steps", "4"),
        Case(p, "--warmup_steps", ("--warmup_steps", "100"), "fewer than the 4 steps", "100"),
        Case(p, "--min_lr", ("--min_lr", "0.1", "--learning_rate", "0.01"), "min_lr <= learning_rate", "0.1"),
        Case(p, "--min_lr", ("--min_lr", "0.1"), "min_lr <= the auto LR", "0.1"),
        Case(p, "--gradient_accumulation_steps", ("--gradient_accumulation_steps", "9"), "<= batches of an epoch", "9"),
        Case(p, "--train_file", ("--train_file", "{in}/missing.csv"), "an existing file", "missing.csv"),
        Case(p, "--train_file", ("--train_file", "{in}/empty"), "a file, not a folder", "empty"),
        Case(p, "--train_file", ("--train_file", "{in}/nolabel.csv"), "has --label_column", "label"),
        Case(p, "--train_file", ("--train_file", "{in}/zero.csv"), "has rows", "zero.csv"),
        Case(p, "--train_file", ("--train_file", "{in}/junk.jsonl"), "JSON lines", "junk.jsonl"),
        Case(p, "--train_file", ("--train_file", "{in}/binary.csv"), "readable text", "binary.csv"),
        Case(p, "--train_file", ("--train_file", "{in}/dangling.pt"), "an existing file (dangling link)", "dangling"),
        Case(p, "--train_file", ("--train_file",), "needs a value", "--train_file"),
        Case(p, "--validation_file", ("--validation_file", "{in}/missing.csv"), "an existing file", "missing.csv"),
        Case(p, "--validation_file", ("--validation_file", "{in}/badlabel.csv"), "labels of the train file", "maybe"),
        Case(p, "--test_file", ("--test_file", "{in}/missing.csv"), "an existing file", "missing.csv"),
        Case(p, "--test_file", ("--test_file", "{in}/junk.jsonl"), "JSON lines", "junk.jsonl"),
        Case(p, "--text_column", ("--text_column", "body"), "a column of the file", "body"),
        Case(p, "--label_column", ("--label_column", "stars"), "a column of the file", "stars"),
        Case(p, "--model", ("--model", "{in}/missing"), "an existing folder", "missing"),
        Case(p, "--model", ("--model", "{in}/empty"), "a Hugging Face model folder", "empty"),
        Case(p, "--model", ("--model", "{in}/good.csv"), "a folder, not a file", "good.csv"),
        Case(p, "--model", ("--model", "{in}/badmodel"), "a loadable model (broken config.json)", "badmodel"),
        Case(p, "--device", ("--device", "quantum"), "a torch device", "quantum"),
        Case(p, "--device", ("--device", "cuda:7"), "a device this machine has", "cuda"),
        Case(p, "--output_dir", ("--output_dir", "{in}/good.csv"), "a folder, not a file", "good.csv"),
        Case(p, "--output_dir", ("--output_dir", "{in}/oldrun"), "not a finished run without --overwrite", "oldrun"),
        Case(p, "--output_dir", ("--output_dir",), "needs a value", "--output_dir"),
        Case(p, "--output_dir", ("--output_dir", "{in}/loop1/run"), "no symbolic link loop", "symbolic link loop"),
        Case(p, "--output_dir", ("--output_dir", "{in}/good.csv/run"), "not under a file", "is a file, not a folder"),
        Case(p, "--output_dir", ("--output_dir", "{in}/otherrun"), "not a run with checkpoints", "otherrun"),
        Case(p, "--learning_rate", ("--learning_rate", "1e300"), "at most 1e36 (float32 AdamW)", "1e+300"),
        Case(p, "--seed", ("--seed", str(2**63 - 1)), "below 2**32", str(2**63 - 1)),
        Case(p, "--save_steps", ("--save_strategy", "no", "--save_steps", "5"), "needs --save_strategy epoch", "epoch"),
        Case(p, "--max_seq_length", ("--max_seq_length", "100000"), "within the model's 512 positions", "100000"),
        Case(p, "--train_file", ("--train_file", "{in}/onelabel.csv"), "at least two labels", "onelabel.csv"),
        Case(p, "--train_file", ("--train_file", "{in}/listlabel.jsonl"), "labels are not JSON lists", "JSON list"),
        Case(p, "--resume_from_checkpoint", ("--resume_from_checkpoint", "{in}/zeroed.pt"), "checksum", "damaged"),
        Case(p, "--resume_from_checkpoint", ("--resume_from_checkpoint", "{in}/format1.pt"), "format 2", "format 1"),
        Case(p, "--resume_from_checkpoint", ("--resume_from_checkpoint", "{in}/missing.pt"), "existing", "missing"),
        Case(p, "--resume_from_checkpoint", ("--resume_from_checkpoint", "{in}/empty"), "a file", "empty"),
        Case(p, "--resume_from_checkpoint", ("--resume_from_checkpoint", "{in}/zero.pt"), "loadable", "zero.pt"),
        Case(p, "--resume_from_checkpoint", ("--resume_from_checkpoint", "{in}/junk.pt"), "loadable", "junk.pt"),
        Case(p, "--resume_from_checkpoint", ("--resume_from_checkpoint", "latest"), "a checkpoint exists", "latest"),
        Case(p, "--resume_from_checkpoint", ("--resume_from_checkpoint",), "needs a value", "--resume_from_checkpoint"),
        Case(p, "--replan", ("--replan",), "only with --resume_from_checkpoint", "--replan"),
        Case(p, "--unknown_flag", ("--unknown_flag", "1"), "no such flag", "--unknown_flag"),
    ]
    return cases


def _cli_cases(program: str) -> list[Case]:
    cases = _value_cases(program, SHOW_FLAGS)
    for flag, kind in _other_program_flags().items():
        if kind == "switch":
            cases.append(Case(program, flag, (f"{flag}=yes",), "takes no value", names=flag, generated=True))
        else:
            cases.append(Case(program, flag, (flag,), "needs a value", names=flag, generated=True))
    cases += [
        Case(program, "--batch-size", ("--batch-size", "8", "--num-epochs", "2"), "phase5 only", "--batch-size 8"),
    ]
    if program == "lrsched show":
        cases.append(Case(program, "--json", ("--json", "--max-steps", "20000000"), "at most 10^7 values", "--every"))
    cases += [
        Case(program, "--min-lr", ("--min-lr", "0.1", "--lr", "0.01"), "min-lr <= lr", "0.1"),
        Case(program, "--warmup-steps", ("--warmup-steps", "100"), "fewer than --max-steps (100)", "100"),
        Case(program, "--warmup-ratio", ("--warmup-ratio", "0.5"), "not with --warmup-steps", "0.5"),
        Case(program, "--cosine-restarts", ("--cosine-restarts", "--lr-strategy", "linear"), "not with another"),
        Case(program, "--lr", ("--lr", "0.1", "--num-epochs", "2", "--steps-per-epoch", "10"), "phase5 only", "0.1"),
        Case(program, "--replan", ("--replan",), "only for resuming a run"),
        Case(program, "--steps", ("--steps", "50"), "only for open-ended plans", "50"),
        Case(program, "--unknown-flag", ("--unknown-flag",), "no such flag", "--unknown-flag"),
    ]
    if program == "lrsched plot":
        cases += [
            Case(program, "--output", ("-o", "{out}/lr.txt"), "ends in .png, .svg or .pdf", "lr.txt"),
            Case(program, "--output", ("-o", "{out}/nofolder/lr.png"), "in an existing folder", "nofolder"),
            Case(program, "--output", ("-o", "{in}/empty"), "a file, not a folder", "empty"),
            Case(program, "--output", ("-o",), "needs a value", "-o"),
            Case(program, "--compare", ("--compare", "auto,cosin"), "strategy names", "cosin"),
            Case(program, "--compare", ("--compare", ""), "at least one name", "--compare"),
            Case(
                program,
                "--compare",
                ("--compare", "linear", "--lr-strategy", "cosine"),
                "not with --lr-strategy",
                "--compare",
            ),
        ]
    return cases


CASES: list[Case] = [*_dino_cases(), *_train_cases(), *_cli_cases("lrsched show"), *_cli_cases("lrsched plot")]
