"""LoRA fine-tuning of a causal LM with TRL's ``SFTTrainer``, given the learning-rate strategy by three lines.

The lines marked ``lrsched (k/3)`` are the whole change from the plain TRL script (docs/hf.md): the
import, the config class, the trainer class. Everything is made here, nothing is downloaded: a
2-layer Llama built from a config, a character-level tokenizer built with ``tokenizers``, and a few
hundred lines of Python as the data. It trains in seconds on a CPU.

    python examples/hf_lora_sft.py --output_dir runs/sft --use_cpu --num_train_epochs 2
    python examples/hf_lora_sft.py --output_dir runs/sft --use_cpu --lr_strategy cosine --learning_rate 1e-3
    python examples/hf_lora_sft.py --output_dir runs/sft --use_cpu --loraplus_lr_ratio 16
    torchrun --nproc_per_node 2 examples/hf_lora_sft.py --output_dir runs/sft --use_cpu
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from peft.optimizers import create_loraplus_optimizer
from tokenizers import Tokenizer, models
from transformers import HfArgumentParser, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lrsched.hf import (  # lrsched (1/3): was `from trl import SFTConfig, SFTTrainer`
    StrategySFTConfig,
    StrategySFTTrainer,
)

SPECIAL = ("<pad>", "<eos>", "<unk>")


@dataclass
class ScriptArguments:
    examples: int = field(default=64, metadata={"help": "lines of code to train on"})
    lora_r: int = field(default=4, metadata={"help": "LoRA rank"})
    loraplus_lr_ratio: float = field(
        default=0.0, metadata={"help": "LoRA+: the B matrices' LR over the A matrices' (0: plain LoRA)"}
    )


def code_lines(n: int, seed: int = 0) -> list[str]:
    """``n`` one-line Python functions, the same for a given ``n`` and ``seed``."""
    rng = random.Random(seed)
    ops = [("add", "+"), ("sub", "-"), ("mul", "*"), ("div", "/")]
    names = "abcxyz"
    lines = []
    for _ in range(n):
        name, op = rng.choice(ops)
        a, b = rng.sample(names, 2)
        lines.append(f"def {name}_{a}{b}({a}, {b}): return {a} {op} {b}")
    return lines


def char_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A character-level tokenizer for ``texts``, built in memory: a BPE model with no merges splits into characters."""
    chars = sorted({c for text in texts for c in text})
    vocab = {token: i for i, token in enumerate([*SPECIAL, *chars])}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def tiny_causal_lm(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer, 32-wide Llama from a config (random weights)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def lora(model: LlamaForCausalLM, r: int) -> PeftModel:
    config = LoraConfig(
        r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)  # type: ignore[return-value]


def leave_process_group() -> None:
    """Under ``torchrun``: leave the process group while Python is whole (parsing the config joined it).

    A gloo group still alive at interpreter exit is torn down with the interpreter, and torch 2.13
    then sometimes kills a rank with SIGABRT ("terminate called without an active exception") after
    the work is done. Local: it waits for no other rank, so a rank that failed leaves at once, and the
    others' pending collectives fail instead of waiting for it."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> StrategySFTTrainer:
    parser = HfArgumentParser((ScriptArguments, StrategySFTConfig))  # lrsched (2/3): was SFTConfig
    script, config = parser.parse_args_into_dataclasses(argv)
    try:
        trainer = train(script, config)
        trainer.accelerator.wait_for_everyone()  # every rank is done with the group before one leaves it
    finally:
        leave_process_group()
    return trainer


def train(script: ScriptArguments, config: StrategySFTConfig) -> StrategySFTTrainer:
    texts = code_lines(script.examples)
    tokenizer = char_tokenizer(texts)
    model = lora(tiny_causal_lm(len(tokenizer)), script.lora_r)
    optimizers: tuple[torch.optim.Optimizer | None, None] = (None, None)
    if script.loraplus_lr_ratio:
        loraplus = create_loraplus_optimizer(
            model, torch.optim.AdamW, lr=config.learning_rate, loraplus_lr_ratio=script.loraplus_lr_ratio
        )
        optimizers = (loraplus, None)
    trainer = StrategySFTTrainer(  # lrsched (3/3): was SFTTrainer
        model=model,
        args=config,
        train_dataset=Dataset.from_dict({"text": texts}),
        processing_class=tokenizer,
        optimizers=optimizers,
    )
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model()
    return trainer


if __name__ == "__main__":
    main()
