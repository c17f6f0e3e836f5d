"""The model and how it trains: the VLM, adapters, tokenizers, batches, feature cache, training loop."""
