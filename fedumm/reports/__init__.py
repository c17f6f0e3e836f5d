"""What people read: summaries, the papers' tables, communication accounting, lineage."""
