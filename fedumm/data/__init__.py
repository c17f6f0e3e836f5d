"""Datasets as shards: the normalized shard format, the built-in shapes data, downloads and real sources."""
