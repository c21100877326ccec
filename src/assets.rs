//! Part of the `sipdesk` binary: the manual pages and shell completions the packages install,
//! generated from the command line's own definition so they cannot drift from `--help`.
//! `packaging/build-deb` and `packaging/build-rpm` run `sipdesk generate-assets DIR` with the
//! binary they package. That command is added beside the user's commands only when parsing:
//! clap_complete would offer even a hidden subcommand, and `clap::Command` cannot drop one.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap_complete::Shell;

/// `generate-assets DIR`, hidden from `--help`.
pub(crate) fn subcommand() -> clap::Command {
    clap::Command::new("generate-assets")
        .about("Write the manual pages and shell completions into a directory (for packaging)")
        .hide(true)
        .arg(
            clap::Arg::new("dir")
                .help("Where to write man/ and completions/")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf)),
        )
}

/// The directory to write into, when `generate-assets` is the command.
pub(crate) fn requested(matches: &clap::ArgMatches) -> Option<&PathBuf> {
    matches
        .subcommand_matches("generate-assets")?
        .get_one::<PathBuf>("dir")
}

/// Writes `DIR/man/sipdesk.1` with a page per subcommand (`sipdesk-route.1`, …) and
/// `DIR/completions/` for bash (`sipdesk.bash`), zsh (`_sipdesk`) and fish (`sipdesk.fish`).
pub(crate) fn generate(mut command: clap::Command, dir: &Path) -> anyhow::Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for out in [&man, &completions] {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    }
    clap_mangen::generate_to(command.clone(), &man)
        .with_context(|| format!("cannot write the manual pages to {}", man.display()))?;
    let name = command.get_name().to_owned();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, &name, &completions).with_context(
            || {
                format!(
                    "cannot write the {shell} completions to {}",
                    completions.display()
                )
            },
        )?;
    }
    Ok(())
}
