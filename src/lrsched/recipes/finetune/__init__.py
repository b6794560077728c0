"""train.py: fine-tuning a pretrained transformer with the run-length LR strategy (DESIGN section 4)."""
