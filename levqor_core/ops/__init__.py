"""Operations: periodic jobs (Notion sync, quota alerts, health log, purges), Prometheus metrics, the ops view."""
