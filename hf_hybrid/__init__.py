"""hf-hybrid: multilingual dense retrieval with hybrid-batch fine-tuning, on the Hugging Face stack."""

__version__ = "0.1.0"
