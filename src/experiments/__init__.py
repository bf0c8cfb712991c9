"""experiments: fine-tune pretrained transformer encoders on business NLP tasks with one command."""

__version__ = "0.1.0"
