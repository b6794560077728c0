"""What both programs share: checkpoints, device and precision, distributed, run logs, stopping."""
