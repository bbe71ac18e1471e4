//! A rule-set version's files, kept by the ledger so a past decision can be
//! re-evaluated byte for byte.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// One file of a rule-set version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveFile {
    /// Path inside the rule-set folder (`/`-separated, relative).
    pub path: String,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// The bytes.
    pub bytes: Arc<[u8]>,
}

/// Every file a rule-set version's content hash covers (the manifest, each
/// module, each list), so the version can be loaded again byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesetArchive {
    /// The version (content hash, shortened), as decisions name it.
    pub version: Arc<str>,
    /// The full content hash.
    pub sha256: String,
    /// The files.
    pub files: Vec<ArchiveFile>,
}

/// Why a rule-set archive could not be written out.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// A file's path would leave the target folder (absolute, or with `..`).
    #[error("rule-set version {version}: file path {path:?} is not inside the rule-set folder")]
    OutsideFolder {
        /// The rule-set version.
        version: Arc<str>,
        /// The offending path.
        path: String,
    },
    /// Writing a file or creating a folder failed.
    #[error("{path}: {source}")]
    Io {
        /// What was being written.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl RulesetArchive {
    /// Writes the files under `dir` (which must exist). A path that would
    /// leave `dir` (absolute, or with `..`) is refused.
    pub fn extract(&self, dir: &Path) -> Result<(), ExtractError> {
        for f in &self.files {
            let rel = Path::new(&f.path);
            if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                return Err(ExtractError::OutsideFolder { version: self.version.clone(), path: f.path.clone() });
            }
            let to = dir.join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|source| ExtractError::Io { path: parent.to_path_buf(), source })?;
            }
            std::fs::write(&to, &f.bytes).map_err(|source| ExtractError::Io { path: to.clone(), source })?;
        }
        Ok(())
    }
}
