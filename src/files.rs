//! Files the engine writes: models, checkpoints, logs.

use crate::error::{Error, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: a hidden temporary file beside it (named by the
/// process, so two processes never share one), fsync, rename over `path`, then fsync of
/// the directory so the rename itself survives a crash. On failure `path` keeps its
/// previous contents.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let attempt = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    attempt().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::Io(format!(
            "could not write {} ({e}); the previous file there is unchanged. Free disk space \
             or choose another output folder",
            path.display()
        ))
    })
}
