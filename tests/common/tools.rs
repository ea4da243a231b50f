//! The external tools the suites run (kustomize, kubernetes-validate, chdb-python), where
//! `./dev/install` puts them.

use std::path::PathBuf;

/// An external tool: `$BXB_TOOLS_BIN/NAME` (exported by `./dev/test`), else the cache directory
/// `./dev/install` fills, else `PATH`. Missing is a failure, never a skip.
pub fn tool(name: &str) -> PathBuf {
    let cache = std::env::var_os("BXB_CACHE").map(PathBuf::from).or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(base.join("bxb"))
    });
    let mut candidates: Vec<PathBuf> = Vec::new();
    candidates.extend(std::env::var_os("BXB_TOOLS_BIN").map(|dir| PathBuf::from(dir).join(name)));
    candidates.extend(cache.map(|dir| dir.join("bin").join(name)));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join(name)));
    }
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "{name} not found: run ./dev/install (it installs {name} into the cache's bin/ directory), \
             or set BXB_TOOLS_BIN, or put {name} on PATH"
        )
    })
}
