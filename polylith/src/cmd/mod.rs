//! One module per subcommand; each owns its clap `Args` and a `run` function.

pub mod bench;
pub mod kernels;
pub mod key;
pub mod local;
pub mod miner;
pub mod model;
pub mod validator;
pub mod yuma;
