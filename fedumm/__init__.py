"""fedumm: federated fine-tuning of vision-language models with parameter-efficient adapters."""

__version__ = "0.1.0"
