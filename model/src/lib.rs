//! Reference Llama-style decoder on candle (CPU), the subnet model and its sampler.
#![warn(missing_docs)]
