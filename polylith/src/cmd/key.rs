//! `polylith key`: create, show, list and import sr25519 hotkeys in the keystore
//! (`--keys-dir`, default `$HOME/.polylith/keys`).

use crate::cmd::KeysDirArg;
use crate::{Global, outln};
use anyhow::{Context, bail};
use polylith_protocol::keys::{Hotkey, Keystore};
use std::io::Read;
use std::path::PathBuf;

/// Flags of `polylith key`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    keys_dir: KeysDirArg,
    #[command(subcommand)]
    command: KeyCommand,
}

/// A key name, given as `--name NAME` or as the first argument.
#[derive(Debug, clap::Args)]
struct NameArg {
    /// Key name (file `<keys-dir>/<name>.json`).
    #[arg(long = "name", value_name = "NAME", conflicts_with = "positional")]
    flag: Option<String>,
    /// Key name, as an alternative to `--name`.
    #[arg(value_name = "NAME")]
    positional: Option<String>,
}

impl NameArg {
    fn get(&self) -> anyhow::Result<&str> {
        match (&self.flag, &self.positional) {
            (Some(n), _) | (None, Some(n)) => Ok(n),
            (None, None) => bail!("a key name is required: --name NAME"),
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum KeyCommand {
    /// Create a new random hotkey (file mode 0600) and print its address.
    ///
    /// The key's 12-word mnemonic is shown once, on stderr, so it can be written down: it is
    /// the only way to restore the key if the file is lost. It is also kept in the key file.
    New {
        #[command(flatten)]
        name: NameArg,
        /// Do not show the mnemonic (scripts; it stays in the key file).
        #[arg(long)]
        no_show_mnemonic: bool,
    },
    /// Print a key's SS58 address (first line, alone) and public key.
    Show {
        #[command(flatten)]
        name: NameArg,
    },
    /// List the keys in the keystore with their addresses.
    List,
    /// Import an existing key: a Bittensor hotkey file or a BIP39 mnemonic.
    Import {
        #[command(flatten)]
        name: NameArg,
        /// An unencrypted btcli hotkey file (`~/.bittensor/wallets/<wallet>/hotkeys/<hotkey>`);
        /// for an encrypted one or a coldkey, the error says what to do.
        #[arg(
            long,
            value_name = "PATH",
            conflicts_with = "mnemonic",
            required_unless_present = "mnemonic"
        )]
        from_file: Option<PathBuf>,
        /// A BIP39 mnemonic, derived as Substrate does with no path; `-` reads it from stdin
        /// (keeps it out of the process list and shell history).
        #[arg(long, value_name = "PHRASE")]
        mnemonic: Option<String>,
    },
}

/// Runs `polylith key`.
pub fn run(args: Args, global: &Global) -> anyhow::Result<()> {
    let store = Keystore::new(global.keys_dir(&args.keys_dir));
    match args.command {
        KeyCommand::New {
            name,
            no_show_mnemonic,
        } => {
            let name = name.get()?;
            let key = store
                .create(name)
                .with_context(|| format!("creating key {name:?}"))?;
            print_key(&store, name, &key)?;
            if !no_show_mnemonic && let Some(phrase) = key.phrase() {
                show_mnemonic(phrase);
            }
        }
        KeyCommand::Show { name } => {
            let name = name.get()?;
            let key = store.load(name)?;
            print_key(&store, name, &key)?;
        }
        KeyCommand::List => list(&store)?,
        KeyCommand::Import {
            name,
            from_file,
            mnemonic,
        } => {
            let name = name.get()?;
            let key = match (from_file, mnemonic) {
                (Some(path), _) => store
                    .import_bittensor_file(name, &path)
                    .with_context(|| format!("importing key {name:?}"))?,
                (None, Some(phrase)) => {
                    let phrase = if phrase == "-" {
                        let mut text = String::new();
                        std::io::stdin()
                            .read_to_string(&mut text)
                            .context("reading the mnemonic from stdin")?;
                        text
                    } else {
                        phrase
                    };
                    store
                        .import_mnemonic(name, &phrase)
                        .with_context(|| format!("importing the mnemonic as {name:?}"))?
                }
                (None, None) => bail!("give --from-file PATH or --mnemonic PHRASE"),
            };
            print_key(&store, name, &key)?;
        }
    }
    Ok(())
}

fn print_key(store: &Keystore, name: &str, key: &Hotkey) -> anyhow::Result<()> {
    let public = key.public();
    outln!("{}", public.to_ss58())?;
    outln!("public key: 0x{}", public.to_hex())?;
    outln!("file: {}", store.path_of(name)?.display())?;
    Ok(())
}

/// Shows a new key's mnemonic once, as btcli does. On stderr: stdout stays the address and
/// file that scripts read, and a script capturing stdout does not capture the secret.
fn show_mnemonic(phrase: &str) {
    eprintln!(
        "\nIMPORTANT: write down this mnemonic and keep it somewhere safe and offline. It is the \
         only way to restore this hotkey if the key file is lost, and anyone who has it controls \
         the key. It will not be shown again.\n\n    {phrase}\n"
    );
}

fn list(store: &Keystore) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(store.dir()) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("no keys in {}", store.dir().display());
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", store.dir().display())),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".json")?;
            (!stem.starts_with('.')).then(|| stem.to_owned())
        })
        .collect();
    names.sort();
    for name in names {
        match store.load(&name) {
            Ok(key) => outln!("{name}\t{}", key.public().to_ss58())?,
            Err(e) => outln!("{name}\t(unreadable: {:#})", anyhow::Error::new(e))?,
        }
    }
    Ok(())
}
