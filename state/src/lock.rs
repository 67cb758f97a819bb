//! One process per state directory: [`StateDirLock`], an exclusive
//! advisory lock on the directory's `LOCK` file, taken before anything in
//! the directory is read or written.

use std::fs;
use std::path::Path;

use crate::StateError;

/// The file in a state directory that its process holds locked.
const LOCK_FILE: &str = "LOCK";

/// A state directory held by this process: while it lives, another process
/// asking for the same directory is refused (an advisory lock on its
/// `LOCK` file, which the operating system releases when the process ends,
/// however it ends). The file names the holder, for the refusal's message.
#[derive(Debug)]
pub struct StateDirLock {
    _file: fs::File,
}

impl StateDirLock {
    /// Takes `dir` (creating it if needed) for this process, or says who
    /// holds it.
    pub fn take(dir: &Path) -> Result<StateDirLock, StateError> {
        use std::io::{Read, Seek, Write};
        let io = |source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(StateError::InUse {
                    dir: dir.to_path_buf(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(fs::TryLockError::Error(error)) => return Err(io(error)),
        }
        let holder = format!(
            "trimatch process {} on {}, since {}",
            std::process::id(),
            hostname(),
            chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(holder.as_bytes()).map_err(io)?;
        Ok(StateDirLock { _file: file })
    }
}

/// This host's name, for a lock's holder line.
fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "this host".to_string())
}
