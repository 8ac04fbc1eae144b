//! Errors: [`MinerError`] for start-up and serving, [`ApiError`] for one HTTP reply.

use crate::backend::BackendError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use polylith_protocol::keys::KeyError;
use polylith_protocol::metagraph::MetagraphError;
use polylith_protocol::signing::Rejection;

/// Errors that stop the miner (start-up or fatal serving failures).
#[derive(Debug, thiserror::Error)]
pub enum MinerError {
    /// Invalid configuration.
    #[error("invalid miner configuration: {0}")]
    Config(String),
    /// The metagraph could not be loaded.
    #[error(transparent)]
    Metagraph(#[from] MetagraphError),
    /// The hotkey could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The compute backend could not start.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The LLM could not be loaded.
    #[error("loading the model")]
    Model(#[from] polylith_model::ModelError),
    /// Metrics registration failed (a duplicate name: a bug).
    #[error("registering metrics")]
    Metrics(#[from] prometheus::Error),
    /// The TLS certificate or key could not be loaded.
    #[error("setting up TLS on the task API")]
    Tls(#[source] Box<polylith_net::tls::TlsError>),
    /// Binding or serving a socket failed. The message says what was being done; the OS
    /// error is the source (error-chain formatting prints it once).
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A reply that is not a success: status, stable reason and a human message, sent as
/// `{"error": reason, "message": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case reason (metrics label for rejections).
    pub reason: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// An error with an explicit status and reason.
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }
    /// 400 with a reason.
    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, message)
    }
    /// 404 for a commitment that does not exist (anymore) for this sender.
    pub fn unknown_commitment(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_commitment",
            format!("unknown or expired commitment {id:?}"),
        )
    }
    /// 500 for a compute failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    /// 413: the body exceeds the configured limit.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds {limit} bytes"),
        )
    }
    /// 408: the body did not arrive within `timeout_ms` of its verified headers.
    pub fn body_timeout(timeout_ms: u64) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("request body not received within {timeout_ms} ms of its headers"),
        )
    }
    /// 401 `stale_timestamp`: the request was signed before this miner started, so its nonce
    /// may have been seen by a previous run whose replay cache is gone.
    pub fn signed_before_start(timestamp_ms: u64, started_ms: u64) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "stale_timestamp",
            format!(
                "request timestamp {timestamp_ms} is before this miner started \
                 ({started_ms}); sign a fresh request"
            ),
        )
    }
    /// 503: every compute slot and queue place is taken.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let status = StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        Self::new(status, r.reason(), r.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.reason, "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}
