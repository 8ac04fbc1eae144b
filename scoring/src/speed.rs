//! Latency and throughput scores relative to the other miners in a round.
