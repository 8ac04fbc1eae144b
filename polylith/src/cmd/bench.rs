//! `polylith bench` (placeholder until its owner fills it in).

use crate::Global;

/// Flags of `polylith bench`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `polylith bench`.
pub fn run(_args: Args, _global: &Global) -> anyhow::Result<()> {
    anyhow::bail!("`polylith bench` is not available yet")
}
