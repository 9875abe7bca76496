use std::path::PathBuf;

use egress_loader::policy::{
    Overrides, Policy, check::warnings, commented_default_config, default_config_toml,
};

use super::Result;

/// Validate a configuration file without touching the kernel; print the
/// policy it gives. Exit status 2 (with the field named) if it is invalid.
/// A valid policy that leaves a known metadata endpoint open, or replaces a
/// built-in rule, is said on stderr as a WARNING (exit status 0).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  egress-loader check-config /etc/egress-filter.toml\n  egress-loader check-config --defaults > egress-filter.toml"
)]
pub struct Args {
    /// The TOML file to check.
    #[arg(required_unless_present = "defaults")]
    file: Option<PathBuf>,
    /// Print the default configuration as a TOML file instead.
    #[arg(long, conflicts_with = "file")]
    defaults: bool,
    /// With --defaults: every setting commented out under a header (the
    /// packaged /etc/egress-filter/config.toml).
    #[arg(long, requires = "defaults")]
    commented: bool,
}

pub fn main(a: Args) -> Result {
    if a.defaults {
        if a.commented {
            print!("{}", commented_default_config());
            return Ok(());
        }
        print!("{}", default_config_toml());
        return Ok(());
    }
    let path = a.file.expect("clap requires it");
    let policy = Policy::from_file(&path, &Overrides::default())?;
    for w in warnings(&policy) {
        eprintln!("egress-loader: WARNING: {w}");
    }
    println!("{}: valid", path.display());
    println!(
        "{}",
        serde_json::to_string_pretty(&policy).expect("serializable")
    );
    Ok(())
}
