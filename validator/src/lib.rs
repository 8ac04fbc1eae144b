//! The validator daemon: challenges miners, verifies, scores, persists and sets weights.
//!
//! Owns: the round loop (query every miner of the metagraph with fresh challenges, verify
//! receipts and answers), per-round relative scores and their EMA, the signed weight vector
//! published at `GET /v1/weights`, fetching and checking peers' weights, running the Yuma
//! epoch over all validators' weights, the sled database a restart resumes from, and the
//! validator's metrics.
//!
//! Must not: define wire formats or scoring math (those live in `polylith-protocol` and
//! `polylith-scoring`), read the keystore (callers hand it a loaded hotkey), or bind sockets
//! itself (callers pass bound listeners, so tests and `polylith local` can use port 0).
//!
//! In-process use: [`Validator::new`], then either [`run`] / [`Validator::serve`] with bound
//! listeners, or drive [`Validator::run_round`] yourself, mount [`Validator::router`] and read
//! [`Validator::snapshot`].
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod error;
pub mod metrics;
pub mod state;
pub mod store;
pub mod task;
mod validator;
pub mod weights;

pub use config::{TaskWeights, ValidatorBehaviour, ValidatorConfig};
pub use error::ValidatorError;
pub use metrics::ValidatorMetrics;
pub use state::{MinerSnapshot, PersistedState, RoundRecord, ValidatorSnapshot};
pub use task::{Failure, FailureReason, QueryOutcome, Task};
pub use validator::{PeerOutcome, Validator, WEIGHTS_PATH, check_peer_weights, run};
