//! Task kinds a miner can serve and a validator can query.
//!
//! A new task kind adds a variant here, a request/response pair in its own module and an
//! endpoint path; the envelope (signing, receipts), scoring pipeline and persistence are shared.

use serde::{Deserialize, Serialize};

/// One kind of work on the subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Proof-of-compute matrix product with a Merkle commitment.
    Gemm,
    /// LLM inference on the subnet's model.
    Llm,
}

impl TaskKind {
    /// Stable lowercase name used in metrics labels, sled keys and CLI flags.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Gemm => "gemm",
            TaskKind::Llm => "llm",
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
