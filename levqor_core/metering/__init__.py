"""Usage metering: the Redis counters the gate increments, their flush to the database, and `flask usage`."""
