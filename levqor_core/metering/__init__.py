"""Usage metering: the Redis counters the gate increments, the flusher that persists and replays them, `flask usage`."""
