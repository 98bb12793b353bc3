"""RQ tasks: plain functions taking ids, enqueued only through the core."""
