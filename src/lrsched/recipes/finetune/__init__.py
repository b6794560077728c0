"""train.py: fine-tuning a pretrained transformer with the run-length LR strategy (docs/design.md section 4)."""
