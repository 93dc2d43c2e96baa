"""Adapters for other training loops: Hugging Face `Trainer` (`huggingface`), Lightning (`lightning`),
and TensorBoard export of recorded columns (`tensorboard`); each needs its own extra installed."""
