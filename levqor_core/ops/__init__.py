"""Operations: the periodic jobs (Notion sync, quota alerts, health log, purges), Prometheus metrics and the operator's view."""
