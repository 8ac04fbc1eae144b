//! `polylith key` (placeholder until its owner fills it in).

use crate::Global;

/// Flags of `polylith key`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `polylith key`.
pub fn run(_args: Args, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("`polylith key` is not available yet")
}
