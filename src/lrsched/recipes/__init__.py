"""The two training programs built on lrsched: DINO-X pretraining and fine-tuning."""
