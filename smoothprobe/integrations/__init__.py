"""Adapters for other training loops: Hugging Face `Trainer` (`huggingface`), Lightning (`lightning`),
and mirrors of recorded columns to TensorBoard (`tensorboard`), MLflow (`mlflow`) and Weights &
Biases (`wandb`); each needs its own extra installed."""
