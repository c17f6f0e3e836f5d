"""Who holds which sample: partition schemes, one-pass rounds, clustering, embeddings, heterogeneity."""
