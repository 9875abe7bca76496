use std::{
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use egress_loader::{error::ConfigError, policy::commented_default_config};

use super::Result;

/// The unit the Debian package installs (deploy/systemd/egress-filter.service).
pub const UNIT: &str = include_str!("../../../deploy/systemd/egress-filter.service");
pub const UNIT_NAME: &str = "egress-filter.service";
/// Where the package puts the binary, as the unit names it.
const PACKAGED_BIN: &str = "/usr/bin/egress-loader";
/// Where `install-unit` puts it: installed by hand, not by a package.
const LOCAL_BIN: &str = "/usr/local/bin/egress-loader";
const UNIT_DIR: &str = "etc/systemd/system";
const CONFIG: &str = "etc/egress-filter/config.toml";

/// Install the systemd unit and this binary on the host, so that the
/// filter is in force before the container engine starts at every boot.
///
/// The container deployment (`docker run --restart always ...`) leaves a
/// window after each reboot: the engine starts its restart-always
/// containers in no particular order, and the ones that start before the
/// filter reach the metadata service. Run this once from the image, with
/// the host's root mounted (no capabilities needed), and follow the
/// commands it prints: it writes ROOT/usr/local/bin/egress-loader (this
/// binary), ROOT/etc/systemd/system/egress-filter.service (ordered before
/// docker.service, containerd.service and kubelet.service) and, unless one
/// exists, ROOT/etc/egress-filter/config.toml (the defaults, commented).
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    docker run --rm -v /:/host egress-filter:latest install-unit --root /host\n  \
    egress-loader install-unit --print      # the unit, written nowhere")]
pub struct Args {
    /// The host's root directory (in a container: where the host's / is mounted).
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Print the unit as it would be installed, and write nothing.
    #[arg(long)]
    print: bool,
}

/// The unit with its commands pointing at `bin`.
pub fn unit_for(bin: &str) -> String {
    format!(
        "# Installed by `egress-loader install-unit` ({}); the binary is {bin}.\n{}",
        env!("CARGO_PKG_VERSION"),
        UNIT.replace(PACKAGED_BIN, bin)
    )
}

/// Writes `data` to `path` through a temporary file renamed over it.
fn write_atomically(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().expect("an absolute path");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().expect("a file name").to_string_lossy(),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

pub fn main(a: Args) -> Result {
    let unit = unit_for(LOCAL_BIN);
    if a.print {
        print!("{unit}");
        return Ok(());
    }
    let systemd = a.root.join("etc/systemd");
    if !systemd.is_dir() {
        return Err(ConfigError::new(
            "--root",
            format!(
                "{} is not a directory: is this a systemd host, and is its / mounted at {} \
                 (docker run -v /:/host ... install-unit --root /host)?",
                systemd.display(),
                a.root.display()
            ),
        )
        .into());
    }
    // This very binary; from the image it is statically linked, so it runs
    // on any host.
    let me = std::fs::read("/proc/self/exe")?;
    let bin = a.root.join(LOCAL_BIN.trim_start_matches('/'));
    write_atomically(&bin, &me, 0o755)?;
    println!(
        "wrote {} (egress-loader {})",
        bin.display(),
        env!("CARGO_PKG_VERSION")
    );
    let unit_path = a.root.join(UNIT_DIR).join(UNIT_NAME);
    write_atomically(&unit_path, unit.as_bytes(), 0o644)?;
    println!("wrote {}", unit_path.display());
    let config = a.root.join(CONFIG);
    if config.exists() {
        println!("kept {} (it exists)", config.display());
    } else {
        write_atomically(&config, commented_default_config().as_bytes(), 0o644)?;
        println!("wrote {} (the defaults, commented)", config.display());
    }
    println!(
        "\nOn the host, switch over (the pinned filter keeps enforcing in between, and the \
         unit's loader adopts it; two loaders do not share a pin dir, so the container goes first):\n  \
         docker update --restart no egress-filter && docker rm -f egress-filter\n  \
         systemctl daemon-reload\n  \
         systemctl enable --now {UNIT_NAME}\n  \
         {LOCAL_BIN} status\n\
         Flags the container ran with (--smtp-rate, --iface, ...) belong in /{CONFIG} now. \
         From the next boot on, the filter is in force before docker.service starts."
    );
    Ok(())
}
