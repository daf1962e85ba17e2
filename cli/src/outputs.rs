//! Output files: checked before a command does its work, written all together at its end.
//!
//! * [`check`] runs first: every output's folder exists and is writable, no output is a folder,
//!   no output is one of the inputs (compared as canonical paths, so `./a.png` and `a.png` are
//!   the same file) and no two outputs are the same file. A bad `-o` fails in milliseconds, not
//!   after a long fit.
//! * [`write_all`] runs last: every file goes to a temporary next to its destination, and only
//!   when all of them are written are they renamed into place, so a command writes all its
//!   outputs or none (a failing rename, which the earlier checks make unlikely, can still leave
//!   the files renamed before it).

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The folder a file path lives in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `path` with every symbolic link and `..` resolved; for a file that does not exist yet, its
/// folder's canonical path joined with its name. `None` if the folder does not exist either.
pub fn canonical(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    Some(folder_of(path).canonicalize().ok()?.join(path.file_name()?))
}

/// Checks the outputs of a command (`(flag, path)`, e.g. `("--recon", recon.png)`) against each
/// other and against its `inputs`; see the module docs.
pub fn check(inputs: &[&Path], outputs: &[(&str, &Path)]) -> Result<()> {
    let inputs: Vec<PathBuf> = inputs.iter().filter_map(|p| canonical(p)).collect();
    let mut seen: Vec<(PathBuf, &str)> = Vec::new();
    for &(flag, path) in outputs {
        let dir = folder_of(path);
        if !dir.is_dir() {
            bail!("{flag} '{}': folder '{}' does not exist", path.display(), dir.display());
        }
        if path.is_dir() || path.file_name().is_none() {
            bail!("{flag} '{}' is a folder; give a file name", path.display());
        }
        probe_writable(dir)
            .map_err(|e| anyhow::anyhow!("{flag} '{}': cannot write in '{}': {e}", path.display(), dir.display()))?;
        let Some(canon) = canonical(path) else { bail!("{flag} '{}': cannot resolve the path", path.display()) };
        if inputs.contains(&canon) {
            bail!("{flag} '{}' is an input of this command; refusing to overwrite it", path.display());
        }
        if let Some((_, other)) = seen.iter().find(|(p, _)| *p == canon) {
            bail!("{flag} '{}' is the same file as {other}", path.display());
        }
        seen.push((canon, flag));
    }
    Ok(())
}

/// Creates and removes a file in `dir`: the only sure test that the folder is writable.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".gpstoken-probe.{}.tmp", std::process::id()));
    std::fs::OpenOptions::new().write(true).create_new(true).open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The temporary a file is written to before it is renamed to `path` (dot-prefixed, with the
/// process id, so that `train --resume` can recognise and remove those of a killed run).
fn temporary_for(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().with_context(|| format!("'{}' is not a file path", path.display()))?;
    Ok(folder_of(path).join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id())))
}

/// Writes every `(path, bytes)`: all to temporaries first (flushed to disk), then all renamed.
/// If any temporary cannot be written, none of the files is touched.
pub fn write_all(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut written: Vec<(PathBuf, &Path)> = Vec::with_capacity(files.len());
    let remove_all = |written: &[(PathBuf, &Path)]| {
        for (tmp, _) in written {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for &(path, bytes) in files {
        let dir = folder_of(path);
        if !dir.is_dir() {
            remove_all(&written);
            bail!("cannot write '{}': folder '{}' does not exist", path.display(), dir.display());
        }
        let tmp = temporary_for(path)?;
        let result = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
        written.push((tmp, path));
        if let Err(e) = result {
            remove_all(&written);
            bail!("cannot write '{}': {e}", path.display());
        }
    }
    for (i, (tmp, path)) in written.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            remove_all(&written[i..]);
            bail!("cannot write '{}': {e}", path.display());
        }
    }
    Ok(())
}

/// A NaN or an infinity in `values` (named `what` in the message) would be written as black
/// pixels or `"psnr": null` with exit code 0: it is an error instead, naming the first index.
pub fn check_finite(values: &[f32], what: &str) -> Result<()> {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        bail!("{what} holds a non-finite value ({}) at index {i}", values[i]);
    }
    Ok(())
}
