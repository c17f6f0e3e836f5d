"""Scores: answering every record of a split and scoring the answers by task."""
