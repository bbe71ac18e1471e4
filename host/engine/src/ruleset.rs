//! Loading a rule-set folder: the manifest, every module (pinned, compiled,
//! linked against the WIT contract, declaration checked against the
//! manifest), the operator lists, and the content hash that versions it all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use rulehost_core::files::{FileError, LIST_BYTES_MAX, MANIFEST_BYTES_MAX, MODULE_BYTES_MAX, read_bounded};
use rulehost_core::manifest::{Budget, MANIFEST_FILE, Manifest, ManifestError, OnError, RuleKind};
use rulehost_core::params::Params;
use rulehost_ledger::{ArchiveFile, RulesetArchive};
use rulehost_sandbox::{CompiledRule, LoadError, Sandbox};

/// The folder of operator lists inside a rule set.
pub const LISTS_DIR: &str = "lists";
/// Values one list may hold.
pub const LIST_ENTRIES_MAX: usize = 10_000_000;
/// Longest history window a rule may declare, in seconds (90 days): the
/// host keeps history for the longest declared window, so one rule could
/// otherwise switch pruning off for every source.
pub const HISTORY_WINDOW_SECONDS_LIMIT: u64 = 90 * 86_400;
/// Hex digits of a content hash shown in decisions.
pub const VERSION_HEX_DIGITS: usize = 16;

/// Why a rule set could not be loaded. Each variant names the file or rule.
#[derive(Debug, thiserror::Error)]
pub enum RuleSetError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file was refused before it was read (not a regular file, a link
    /// out of the folder, over its size limit).
    #[error(transparent)]
    File(#[from] FileError),
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A rule declares a longer history window than the host keeps.
    #[error(
        "rule `{rule}` declares a history window of {seconds} s, longer than the limit of {HISTORY_WINDOW_SECONDS_LIMIT} s (90 days)"
    )]
    HistoryWindow {
        /// Rule name.
        rule: String,
        /// The declared window, in seconds.
        seconds: u64,
    },
    /// A module failed to compile, link or describe itself.
    #[error("rule `{rule}` ({path}): {source}")]
    Module {
        /// Rule name.
        rule: String,
        /// Module path.
        path: PathBuf,
        /// What failed.
        source: LoadError,
    },
    /// The module's SHA-256 differs from its pin.
    #[error(
        "rule `{rule}`: module sha256 is {actual}, the manifest pins {expected}; rebuild the module or update the pin"
    )]
    Pin {
        /// Rule name.
        rule: String,
        /// The pin.
        expected: String,
        /// The module's hash.
        actual: String,
    },
    /// The manifest's kind disagrees with the module's declaration.
    #[error(
        "rule `{rule}`: the manifest says kind = \"{manifest}\" but the module is a {module} rule; set kind = \"{module}\""
    )]
    KindMismatch {
        /// Rule name.
        rule: String,
        /// Kind in the manifest.
        manifest: &'static str,
        /// Kind the module declares.
        module: &'static str,
    },
    /// Parameters do not match the declaration.
    #[error("rule `{rule}`: {message}")]
    Params {
        /// Rule name.
        rule: String,
        /// What is wrong.
        message: String,
    },
    /// A declared list does not exist.
    #[error("rule `{rule}` reads list `{list}` but {dir}/{list}.txt does not exist")]
    ListMissing {
        /// Rule name.
        rule: String,
        /// List name.
        list: String,
        /// Lists folder.
        dir: String,
    },
    /// A list is too large.
    #[error("{path}: more than {LIST_ENTRIES_MAX} entries")]
    ListTooLarge {
        /// List path.
        path: PathBuf,
    },
}

pub use rulehost_core::lists::Lists;

/// One loaded rule.
pub struct LoadedRule {
    /// Rule name (shared with every decision trace that names it).
    pub name: Arc<str>,
    /// Validation or risk.
    pub kind: RuleKind,
    /// Score weight.
    pub weight: Decimal,
    /// Budget per call.
    pub budget: Budget,
    /// Failure policy.
    pub on_error: OnError,
    /// Content hash of the module, shortened (`VERSION_HEX_DIGITS`).
    pub version: Arc<str>,
    /// Full SHA-256 of the module.
    pub sha256: String,
    /// Module size in bytes.
    pub module_bytes: usize,
    /// Typed parameters.
    pub params: Arc<Params>,
    /// The manifest's parameter table for this rule (shared merged with own),
    /// which rule-level cases start from.
    pub manifest_params: toml::Table,
    /// The rule's own parameter keys in the manifest.
    pub own_params: Vec<String>,
    /// Declared lists.
    pub lists: Arc<[String]>,
    /// Declared longest history window, in seconds.
    pub history_window_seconds_max: u64,
    /// The compiled, linked module.
    pub compiled: CompiledRule,
}

/// A loaded, validated rule set: immutable once built.
pub struct RuleSet {
    /// Content hash over the manifest, every module and every list, shortened
    /// (shared with every decision it makes).
    pub version: Arc<str>,
    /// The full content hash.
    pub sha256: String,
    /// Outcome thresholds.
    pub review_at: u32,
    /// Outcome thresholds.
    pub decline_at: u32,
    /// Rules in manifest order.
    pub rules: Vec<LoadedRule>,
    /// Operator lists.
    pub lists: Arc<Lists>,
    /// The longest history window any rule declares, in seconds.
    pub history_window_seconds_max: u64,
    /// The folder it was loaded from.
    pub dir: PathBuf,
    /// The manifest's `[rollout]` guard, for when it is a canary candidate.
    pub guard: Option<crate::rollout::Guard>,
    /// Every file the content hash covers, for the ledger to keep (so a
    /// decision can be re-evaluated with this version later).
    pub archive: Arc<RulesetArchive>,
}

/// Reads a file of the rule set in `root`: a regular file (a symlink only
/// if it stays inside the folder) of at most `limit` bytes.
fn read(root: &Path, path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, RuleSetError> {
    Ok(read_bounded(path, Some(root), limit, what)?)
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl RuleSet {
    /// Loads and validates the rule set in `dir`.
    pub fn load(sandbox: &Sandbox, dir: &Path) -> Result<RuleSet, RuleSetError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest_bytes = read(dir, &manifest_path, MANIFEST_BYTES_MAX, "a manifest")?;
        let manifest_text = String::from_utf8(manifest_bytes.clone()).map_err(|e| RuleSetError::Io {
            path: manifest_path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        let manifest = Manifest::parse(&manifest_path.display().to_string(), &manifest_text)?;

        let (lists, list_hashes, list_files) = load_lists(dir, &dir.join(LISTS_DIR))?;
        let lists = Arc::new(lists);
        let mut files = vec![ArchiveFile {
            path: MANIFEST_FILE.to_owned(),
            sha256: hex_sha256(&manifest_bytes),
            bytes: manifest_bytes.as_slice().into(),
        }];

        let mut hasher = Sha256::new();
        hasher.update(b"manifest\0");
        hasher.update(&manifest_bytes);

        let mut rules = Vec::with_capacity(manifest.rules.len());
        for entry in &manifest.rules {
            let path = dir.join(&entry.module);
            let bytes = read(dir, &path, MODULE_BYTES_MAX, "a rule module")?;
            let sha256 = hex_sha256(&bytes);
            if let Some(pin) = &entry.sha256
                && *pin != sha256
            {
                return Err(RuleSetError::Pin { rule: entry.name.clone(), expected: pin.clone(), actual: sha256 });
            }
            let module_err = |source| RuleSetError::Module { rule: entry.name.clone(), path: path.clone(), source };
            let compiled = sandbox.load_module(&sha256, &bytes).map_err(module_err)?;
            let declared = sandbox.describe(&compiled, &entry.budget).map_err(module_err)?;
            if declared.history_window_seconds_max > HISTORY_WINDOW_SECONDS_LIMIT {
                return Err(RuleSetError::HistoryWindow {
                    rule: entry.name.clone(),
                    seconds: declared.history_window_seconds_max,
                });
            }
            if declared.kind != entry.kind {
                return Err(RuleSetError::KindMismatch {
                    rule: entry.name.clone(),
                    manifest: entry.kind.as_str(),
                    module: declared.kind.as_str(),
                });
            }
            let params = Params::build(&entry.params, &entry.own_params, &declared.params)
                .map_err(|message| RuleSetError::Params { rule: entry.name.clone(), message })?;
            for list in &declared.lists {
                if !lists.has(list) {
                    return Err(RuleSetError::ListMissing {
                        rule: entry.name.clone(),
                        list: list.clone(),
                        dir: dir.join(LISTS_DIR).display().to_string(),
                    });
                }
            }
            files.push(ArchiveFile {
                path: entry.module.clone(),
                sha256: sha256.clone(),
                bytes: bytes.as_slice().into(),
            });
            hasher.update(b"\0module\0");
            hasher.update(entry.module.as_bytes());
            hasher.update(b"\0");
            hasher.update(sha256.as_bytes());
            rules.push(LoadedRule {
                name: entry.name.as_str().into(),
                kind: entry.kind,
                weight: entry.weight,
                budget: entry.budget,
                on_error: entry.on_error,
                version: sha256[..VERSION_HEX_DIGITS].into(),
                sha256,
                module_bytes: bytes.len(),
                params: Arc::new(params),
                manifest_params: entry.params.clone(),
                own_params: entry.own_params.clone(),
                lists: declared.lists.into(),
                history_window_seconds_max: declared.history_window_seconds_max,
                compiled,
            });
        }
        for (name, hash) in &list_hashes {
            hasher.update(b"\0list\0");
            hasher.update(name.as_bytes());
            hasher.update(b"\0");
            hasher.update(hash.as_bytes());
        }
        let sha256 = hex::encode(hasher.finalize());
        let history_window_seconds_max = rules.iter().map(|r| r.history_window_seconds_max).max().unwrap_or(0);
        let version: Arc<str> = sha256[..VERSION_HEX_DIGITS].into();
        files.extend(list_files);
        let archive = Arc::new(RulesetArchive { version: version.clone(), sha256: sha256.clone(), files });
        Ok(RuleSet {
            version,
            sha256,
            archive,
            review_at: manifest.review_at,
            decline_at: manifest.decline_at,
            rules,
            lists,
            history_window_seconds_max,
            dir: dir.to_owned(),
            guard: manifest.guard,
        })
    }
}

/// The lists of a rule set, their hashes by name, and their files.
type LoadedLists = (Lists, BTreeMap<String, String>, Vec<ArchiveFile>);

fn load_lists(root: &Path, dir: &Path) -> Result<LoadedLists, RuleSetError> {
    let mut lists = Lists::default();
    let mut hashes = BTreeMap::new();
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((lists, hashes, files)),
        Err(source) => {
            return Err(RuleSetError::Io { path: dir.to_owned(), source });
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| RuleSetError::Io { path: dir.to_owned(), source })?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("txt") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        let bytes = read(root, &path, LIST_BYTES_MAX, "a list")?;
        let text = String::from_utf8_lossy(&bytes);
        let values = Lists::parse(&text);
        if values.len() > LIST_ENTRIES_MAX {
            return Err(RuleSetError::ListTooLarge { path });
        }
        let sha256 = hex_sha256(&bytes);
        files.push(ArchiveFile {
            path: format!("{LISTS_DIR}/{name}.txt"),
            sha256: sha256.clone(),
            bytes: bytes.into(),
        });
        hashes.insert(name.clone(), sha256);
        lists.insert(name, values);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((lists, hashes, files))
}

#[cfg(test)]
impl RuleSet {
    /// A rule set without rules, for unit tests that only need a version.
    pub(crate) fn empty_for_tests(version: &str) -> RuleSet {
        RuleSet {
            version: version.into(),
            sha256: String::new(),
            review_at: rulehost_core::manifest::REVIEW_AT_DEFAULT,
            decline_at: rulehost_core::manifest::DECLINE_AT_DEFAULT,
            rules: Vec::new(),
            lists: Arc::default(),
            history_window_seconds_max: 0,
            dir: PathBuf::new(),
            guard: None,
            archive: Arc::new(RulesetArchive { version: version.into(), sha256: String::new(), files: Vec::new() }),
        }
    }
}
