//! The GEMM proof-of-compute task: commit to C = A·B for a fresh seed and sizes, then open
//! rows chosen after the commitment and check them against the exact product.

use super::{
    Failure, FailureReason, MinerTarget, QueryContext, QueryOutcome, Task, new_outcome, settle,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use polylith_protocol::Hash32;
use polylith_protocol::gemm::{
    CommitRequest, CommitResponse, Dtype, GemmError, GemmSpec, OpenRequest, OpenResponse,
    verify_opening,
};
use polylith_protocol::task::TaskKind;
use rand::Rng;
use std::collections::HashMap;
use std::time::Duration;

/// Path of the commitment endpoint.
pub const COMMIT_PATH: &str = "/v1/gemm/commit";
/// Path of the opening endpoint.
pub const OPEN_PATH: &str = "/v1/gemm/open";

/// Time an opening may take beyond the commitment's own time. Opening only reads stored
/// rows and paths, so an honest miner answers well within it; a miner that commits at once
/// and then holds the opening would otherwise stretch every round to the full deadline.
pub const OPEN_GRACE: Duration = Duration::from_secs(1);

/// The first few indices of a miner-supplied list and its length, so a failure message stays
/// short whatever the miner sent.
fn preview(rows: &[u32]) -> String {
    const SHOWN: usize = 8;
    let head: Vec<u32> = rows.iter().take(SHOWN).copied().collect();
    if rows.len() > SHOWN {
        format!("{head:?}… ({} rows)", rows.len())
    } else {
        format!("{head:?}")
    }
}

/// GEMM task settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmTask {
    /// Smallest n, k, m.
    pub min_dim: u32,
    /// Largest n, k, m.
    pub max_dim: u32,
    /// Rows opened per query (capped at n).
    pub open_rows: u32,
    /// Requested dtype.
    pub dtype: Dtype,
}

impl GemmTask {
    /// A fresh task instance from OS entropy: seed and each dimension drawn independently.
    pub fn draw_spec(&self) -> GemmSpec {
        let mut rng = rand::rng();
        let (lo, hi) = (self.min_dim.min(self.max_dim), self.max_dim);
        GemmSpec {
            seed: rng.random(),
            n: rng.random_range(lo..=hi),
            k: rng.random_range(lo..=hi),
            m: rng.random_range(lo..=hi),
        }
    }

    /// `min(open_rows, n)` distinct row indices drawn uniformly, after the commitment.
    pub fn draw_rows(&self, n: u32) -> Vec<u32> {
        let r = self.open_rows.min(n) as usize;
        let mut rows: Vec<u32> = rand::seq::index::sample(&mut rand::rng(), n as usize, r)
            .into_iter()
            // Indices are < n, which is a u32.
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        rows.sort_unstable();
        rows
    }

    async fn run_inner(
        &self,
        ctx: &QueryContext<'_>,
        miner: &MinerTarget,
        out: &mut QueryOutcome,
    ) -> Result<(), Failure> {
        let spec = self.draw_spec();
        out.work = spec.flops();
        tracing::debug!(
            n = spec.n,
            k = spec.k,
            m = spec.m,
            seed = spec.seed,
            "gemm challenge"
        );
        let body = serde_json::to_vec(&CommitRequest {
            spec,
            dtype: self.dtype,
        })
        .map_err(|e| Failure::new(FailureReason::Internal, e.to_string()))?;
        let commit = ctx
            .client
            .post_signed(&miner.endpoint, &miner.hotkey, COMMIT_PATH, body)
            .await?;
        let t = commit.elapsed.as_secs_f64();
        out.latency_s = Some(t);
        let response: CommitResponse = serde_json::from_slice(&commit.body).map_err(|e| {
            Failure::new(
                FailureReason::Malformed,
                format!("commit response is not a CommitResponse: {e}"),
            )
        })?;
        let root = parse_root(&response.root)?;
        out.fingerprint = Some(response.root.to_ascii_lowercase());
        if response.rows != spec.n {
            return Err(Failure::new(
                FailureReason::WrongRowCount,
                format!("committed {} rows, the task has {}", response.rows, spec.n),
            ));
        }

        // Rows are chosen only now, after the root is fixed.
        let rows = self.draw_rows(spec.n);
        let body = serde_json::to_vec(&OpenRequest {
            commitment_id: response.commitment_id.clone(),
            rows: rows.clone(),
        })
        .map_err(|e| Failure::new(FailureReason::Internal, e.to_string()))?;
        let open_timeout = OPEN_GRACE.saturating_add(commit.elapsed);
        let open = tokio::time::timeout(
            open_timeout,
            ctx.client
                .post_signed(&miner.endpoint, &miner.hotkey, OPEN_PATH, body),
        )
        .await
        .map_err(|_| {
            Failure::new(
                FailureReason::Timeout,
                format!(
                    "no opening within {} ms (the commitment took {} ms)",
                    open_timeout.as_millis(),
                    commit.elapsed.as_millis()
                ),
            )
        })??;
        let opening: OpenResponse = serde_json::from_slice(&open.body).map_err(|e| {
            Failure::new(
                FailureReason::Malformed,
                format!("open response is not an OpenResponse: {e}"),
            )
        })?;
        let answered: Vec<u32> = opening.rows.iter().map(|r| r.index).collect();
        if answered != rows {
            return Err(Failure::new(
                FailureReason::WrongRows,
                format!(
                    "asked for rows {}, got {}",
                    preview(&rows),
                    preview(&answered)
                ),
            ));
        }
        // Recomputing rows is CPU work; keep it off the async workers.
        let checked =
            tokio::task::spawn_blocking(move || verify_opening(&spec, &root, &rows, &opening))
                .await
                .map_err(|e| {
                    Failure::new(FailureReason::Internal, format!("verification task: {e}"))
                })?;
        checked.map_err(|e| {
            let reason = match &e {
                GemmError::BadSize(_) => FailureReason::Malformed,
                GemmError::RowOutOfRange(_) => FailureReason::RowOutOfRange,
                GemmError::BadPath(_) => FailureReason::BadPath,
                GemmError::WrongRow(_) => FailureReason::WrongRow,
                GemmError::MissingRow(_)
                | GemmError::WrongIndex { .. }
                | GemmError::ExtraRows { .. } => FailureReason::WrongRows,
            };
            Failure::new(reason, e.to_string())
        })?;
        if t > 0.0 {
            out.throughput = Some(spec.flops() / t);
        } else {
            out.throughput = None;
            return Err(Failure::new(
                FailureReason::Internal,
                "commitment arrived in zero time",
            ));
        }
        Ok(())
    }
}

/// A Merkle root from hex (32 bytes).
fn parse_root(hex_root: &str) -> Result<Hash32, Failure> {
    let bytes = hex::decode(hex_root)
        .map_err(|e| Failure::new(FailureReason::Malformed, format!("root is not hex: {e}")))?;
    Hash32::try_from(bytes.as_slice()).map_err(|_| {
        Failure::new(
            FailureReason::Malformed,
            format!("root has {} bytes, expected 32", bytes.len()),
        )
    })
}

impl Task for GemmTask {
    fn kind(&self) -> TaskKind {
        TaskKind::Gemm
    }

    fn query<'a>(
        &'a self,
        ctx: &'a QueryContext<'a>,
        miner: &'a MinerTarget,
    ) -> BoxFuture<'a, QueryOutcome> {
        async move {
            let mut out = new_outcome(TaskKind::Gemm, miner);
            let result = self.run_inner(ctx, miner, &mut out).await;
            settle(out, result)
        }
        .boxed()
    }

    /// Fresh seeds make every honest root distinct, so a root shared by two miners means one
    /// copied the other (or both replay): all of them fail.
    fn cross_check(&self, outcomes: &mut [QueryOutcome]) {
        let mut count: HashMap<String, usize> = HashMap::new();
        for o in outcomes.iter() {
            if let Some(f) = &o.fingerprint {
                *count.entry(f.clone()).or_default() += 1;
            }
        }
        for o in outcomes.iter_mut() {
            let shared = o
                .fingerprint
                .as_ref()
                .and_then(|f| count.get(f))
                .is_some_and(|c| *c > 1);
            if shared {
                let others = o
                    .fingerprint
                    .as_ref()
                    .and_then(|f| count.get(f))
                    .map_or(0, |c| c.saturating_sub(1));
                o.fail(Failure::new(
                    FailureReason::DuplicateRoot,
                    format!("root also returned by {others} other miner(s) for different tasks"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> GemmTask {
        GemmTask {
            min_dim: 4,
            max_dim: 9,
            open_rows: 5,
            dtype: Dtype::F32,
        }
    }

    #[test]
    fn specs_stay_in_range_and_seeds_differ() {
        let t = task();
        let specs: Vec<GemmSpec> = (0..200).map(|_| t.draw_spec()).collect();
        for s in &specs {
            for d in [s.n, s.k, s.m] {
                assert!((4..=9).contains(&d), "{s:?}");
            }
        }
        let seeds: std::collections::HashSet<u64> = specs.iter().map(|s| s.seed).collect();
        assert!(seeds.len() > 190, "seeds repeat: {}", seeds.len());
    }

    #[test]
    fn opened_rows_are_distinct_sorted_and_capped() {
        let t = task();
        let rows = t.draw_rows(100);
        assert_eq!(rows.len(), 5);
        assert!(rows.windows(2).all(|w| w[0] < w[1]));
        assert!(rows.iter().all(|r| *r < 100));
        assert_eq!(t.draw_rows(3), vec![0, 1, 2]);
    }

    #[test]
    fn root_parsing_rejects_bad_hex_and_length() {
        assert!(parse_root(&"ab".repeat(32)).is_ok());
        assert_eq!(
            parse_root("zz").unwrap_err().reason,
            FailureReason::Malformed
        );
        assert_eq!(
            parse_root(&"ab".repeat(31)).unwrap_err().reason,
            FailureReason::Malformed
        );
    }

    #[test]
    fn shared_roots_fail_every_holder() {
        let miner = |uid: u16| MinerTarget {
            uid,
            hotkey: polylith_protocol::keys::PublicKey([uid as u8; 32]),
            ss58: format!("m{uid}"),
            endpoint: String::new(),
        };
        let mut outs: Vec<QueryOutcome> = (0..3)
            .map(|uid| {
                let mut o = new_outcome(TaskKind::Gemm, &miner(uid));
                o.throughput = Some(1.0);
                o.fingerprint = Some(if uid < 2 { "aa" } else { "bb" }.to_string());
                o
            })
            .collect();
        task().cross_check(&mut outs);
        assert_eq!(
            outs[0].failure.as_ref().map(|f| f.reason),
            Some(FailureReason::DuplicateRoot)
        );
        assert_eq!(
            outs[1].failure.as_ref().map(|f| f.reason),
            Some(FailureReason::DuplicateRoot)
        );
        assert!(outs[2].verified());
    }
}
