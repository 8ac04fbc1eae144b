//! Exponential moving averages of per-miner scores (owned by the validator's author).
