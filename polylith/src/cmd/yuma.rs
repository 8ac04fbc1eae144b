//! `polylith yuma`: run one Yuma consensus epoch from a JSON file and print its outputs.
//!
//! The file holds `{"params": {...}, "inputs": {...}}` with the fields of one element of
//! `epochs` in `yuma_vectors.json`; the output is one JSON object with the fields of that
//! element's `emulator_outputs`.

use crate::Global;
use anyhow::Context;
use polylith_scoring::yuma::io::EpochCase;
use std::path::PathBuf;

/// Flags of `polylith yuma`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON file with one epoch: `{"params": {...}, "inputs": {...}}`.
    #[arg(long)]
    pub input: PathBuf,
    /// Pretty-print the output JSON.
    #[arg(long)]
    pub pretty: bool,
}

/// Runs `polylith yuma`.
pub fn run(args: Args, _global: &Global) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let case =
        EpochCase::from_json(&text).with_context(|| format!("parsing {}", args.input.display()))?;
    let out = case.run().context("running the epoch")?;
    let json = if args.pretty {
        serde_json::to_string_pretty(&out)?
    } else {
        serde_json::to_string(&out)?
    };
    println!("{json}");
    tracing::debug!(uids = out.emission.len(), "yuma epoch done");
    Ok(())
}
