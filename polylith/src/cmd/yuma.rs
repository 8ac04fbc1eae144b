//! `polylith yuma`: run one Yuma consensus epoch from a JSON file and print its outputs.

use crate::{Global, outln};
use anyhow::Context;
use polylith_scoring::yuma::io::EpochCase;
use std::path::PathBuf;

/// Flags of `polylith yuma`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP, after_help = "See --help for the file layout and how to read the output.")]
pub struct Args {
    /// JSON file with one epoch: `{"params": {...}, "inputs": {...}}`; a sample is
    /// docs/examples/yuma-epoch.json.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Pretty-print the output JSON.
    #[arg(long)]
    pub pretty: bool,
}

const AFTER_HELP: &str = "\
Input: one JSON object, {\"params\": {...}, \"inputs\": {...}}, uids 0..n. A complete sample
(3 validators with equal stake, 2 of them agreeing on miner 3) is docs/examples/yuma-epoch.json:
  polylith yuma --input docs/examples/yuma-epoch.json --pretty
params: kappa_u16, bonds_penalty_u16, alpha_low_u16, alpha_high_u16 (u16 fractions, x/65535),
  bonds_moving_average (x 1e-6), yuma3, liquid_alpha, alpha_sigmoid_steepness,
  max_allowed_validators, stake_threshold, tempo, activity_cutoff_blocks,
  last_mechanism_step_block, rao_emission; optional owner_uid, commit_reveal_mask, tao_weight.
inputs: current_block, and one entry per uid of stake, weights and bonds_before (sparse rows
  [[uid, u16], ...]), last_update, block_at_registration, validator_permit; optional
  commit_blocks, tao_stake. These are the fields subtensor stores (scoring/tests/data/
  yuma_vectors.json holds each case's epochs in this layout, cases[i].epochs[j]).

Output: one JSON object, one entry per uid in every vector. The values are fixed point, as on
chain, so they are bit-exact and comparable with subtensor:
  *_bits  raw I32F32: divide by 2^32 (4294967296) for the value; 2147483648 is 0.5
  *_u16   stored u16 fractions: divide by 65535; 32767 is 0.49999
  emission, server_emission, validator_emission  rao (1e-9 TAO) paid this epoch
  bonds_after  the sparse u16 bond rows to pass as bonds_before to the next epoch";

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
    outln!("{json}")?;
    tracing::debug!(uids = out.emission.len(), "yuma epoch done");
    Ok(())
}
