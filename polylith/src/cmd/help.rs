//! `--help` of the daemons shows each flag's default, taken from the configuration's own
//! [`Default`] so the help can never disagree with what the daemon does.
//!
//! The daemon flags are `Option`s (a flag given overrides the `--config` file, a flag not
//! given does not), so clap has no default value to show; this adds `[default: …]` to the
//! help text of every flag whose name is a key of the default configuration.

use clap::Command;

/// `cli` with the defaults of `miner` and `validator` written into their flags' help.
pub fn with_daemon_defaults(cli: Command) -> Command {
    let miner = toml_table(&polylith_miner::MinerConfig::default().to_toml());
    let validator = toml_table(&polylith_validator::ValidatorConfig::default().to_toml());
    cli.mut_subcommand("miner", |c| annotate(c, &miner))
        .mut_subcommand("validator", |c| annotate(c, &validator))
}

fn toml_table(text: &str) -> toml::Table {
    // The configs serialise to valid TOML (their own tests check the round trip); a failure
    // here would only cost the defaults in --help, never a start-up.
    text.parse().unwrap_or_default()
}

/// The default of flag `id` in `config`: a top-level key of the same name, or a key of a
/// nested table whose flag is named `<key>_<table prefix>` (`gemm_weight` is
/// `task_weights.gemm`).
fn default_of(config: &toml::Table, id: &str) -> Option<String> {
    let value = config.get(id).or_else(|| {
        let (key, _) = id.rsplit_once('_')?;
        config
            .values()
            .filter_map(toml::Value::as_table)
            .find_map(|t| t.get(key))
    })?;
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Table(_) | toml::Value::Array(_) => None,
        other => Some(other.to_string()),
    }
}

fn annotate(cmd: Command, config: &toml::Table) -> Command {
    let ids: Vec<String> = cmd
        .get_arguments()
        .map(|a| a.get_id().as_str().to_string())
        .collect();
    ids.into_iter().fold(cmd, |cmd, id| {
        let Some(default) = default_of(config, &id) else {
            return cmd;
        };
        cmd.mut_arg(&id, |arg| {
            let suffix = format!(" [default: {default}]");
            let help = arg.get_help().map(|h| format!("{h}{suffix}"));
            let long = arg.get_long_help().map(|h| format!("{h}{suffix}"));
            let arg = match help {
                Some(h) => arg.help(h),
                None => arg,
            };
            match long {
                Some(h) => arg.long_help(h),
                None => arg,
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_keys_are_found_by_their_flag_names() {
        let t: toml::Table = "listen = \"127.0.0.1:1\"\nrounds = 0\n[task_weights]\ngemm = 1.0\n"
            .parse()
            .unwrap();
        assert_eq!(default_of(&t, "listen").as_deref(), Some("127.0.0.1:1"));
        assert_eq!(default_of(&t, "rounds").as_deref(), Some("0"));
        assert_eq!(default_of(&t, "gemm_weight").as_deref(), Some("1.0"));
        assert_eq!(default_of(&t, "print_config"), None);
        assert_eq!(default_of(&t, "task_weights"), None);
    }
}
