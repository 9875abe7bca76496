//! The loader running on a pin dir, as another process finds it: the pid
//! holding the pin dir's lock, and the command line and working directory
//! it was started with, from /proc (same pid namespace only). `reload`
//! reads its flags back from them: the state file (`config_record`) names
//! the config file but not the flags applied over it.

use std::path::PathBuf;

use crate::kernel::{pins::PinDir, system};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningLoader {
    pub pid: u32,
    /// Its command line, word by word (`egress-loader run --config ..`).
    pub args: Vec<String>,
    /// Its working directory, which a relative `--config` is relative to;
    /// `/` if it cannot be read.
    pub cwd: PathBuf,
}

impl RunningLoader {
    /// The loader holding `pins`' lock; `None` when no process (in this
    /// pid namespace) holds it.
    pub fn on(pins: &PinDir) -> std::io::Result<Option<Self>> {
        let Some(pid) = system::lock_holder(pins.root()) else {
            return Ok(None);
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
        let cwd =
            std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|_| PathBuf::from("/"));
        Ok(Some(Self {
            pid,
            args: split_cmdline(&cmdline),
            cwd,
        }))
    }
}

/// /proc/PID/cmdline: the arguments, each ended by a NUL.
fn split_cmdline(cmdline: &[u8]) -> Vec<String> {
    cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_is_split_at_its_nuls() {
        assert_eq!(
            split_cmdline(b"egress-loader\0run\0--config\0a b.toml\0"),
            ["egress-loader", "run", "--config", "a b.toml"]
        );
    }

    #[test]
    fn no_loader_holds_a_pin_dir_nobody_locked() {
        let dir = std::env::temp_dir().join(format!("egress-no-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(RunningLoader::on(&PinDir::new(dir.clone())).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
