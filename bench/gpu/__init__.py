"""The GPU device runs: serving, fine-tuning and the decoder, end to end."""
