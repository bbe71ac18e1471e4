//! The dictionary records are encoded against: each rule-set version's
//! rule names and module versions, once, by number.

// Input reaches this module (stored entries are read back).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::sync::Arc;

use rulehost_core::decision::Decision;

use super::RecordError;

/// One rule-set version as records refer to it: its version string and
/// every (rule name, module version) pair its traces have named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DictionaryEntry {
    /// The rule-set version (content hash, shortened).
    pub version: Arc<str>,
    /// (rule, module version) pairs, in the order first seen.
    pub rules: Vec<(Arc<str>, Arc<str>)>,
}

impl DictionaryEntry {
    /// Its rules as a store keeps them: a JSON array of `[rule, version]` pairs.
    pub fn rules_json(&self) -> String {
        let rules: Vec<(&str, &str)> = self.rules.iter().map(|(r, v)| (&**r, &**v)).collect();
        serde_json::to_string(&rules).unwrap_or_else(|_| "[]".to_owned())
    }

    /// The entry of `version` whose rules a store kept as [`Self::rules_json`].
    pub fn from_stored(version: String, rules_json: &str) -> Result<DictionaryEntry, String> {
        let rules: Vec<(String, String)> =
            serde_json::from_str(rules_json).map_err(|e| format!("rule-set version {version:?}: rules: {e}"))?;
        Ok(DictionaryEntry {
            version: version.into(),
            rules: rules.into_iter().map(|(r, v)| (r.into(), v.into())).collect(),
        })
    }
}

/// The rule-set versions records refer to, by number. Bounded by the number
/// of rule-set versions that ever decided, not by decisions.
#[derive(Clone, Debug, Default)]
pub struct Dictionary {
    entries: Vec<DictionaryEntry>,
    by_version: foldhash::HashMap<Arc<str>, u32>,
}

impl Dictionary {
    /// The entries, by number.
    pub fn entries(&self) -> &[DictionaryEntry] {
        &self.entries
    }

    /// Restores entry `id` as stored.
    pub fn restore(&mut self, id: u32, entry: DictionaryEntry) -> Result<(), RecordError> {
        if id as usize != self.entries.len() {
            return Err(RecordError(format!("rule-set version {id} is out of order")));
        }
        self.by_version.insert(entry.version.clone(), id);
        self.entries.push(entry);
        Ok(())
    }

    /// The number of `decision`'s rule-set version and each trace's pair,
    /// adding what is new; returns the entry's number when it changed.
    pub(super) fn intern(&mut self, decision: &Decision) -> Result<(u32, Vec<u32>, Option<u32>), RecordError> {
        let mut changed = false;
        let id = match self.by_version.get(&decision.ruleset) {
            Some(id) => *id,
            None => {
                let id = u32::try_from(self.entries.len())
                    .map_err(|_| RecordError("more rule-set versions than a record can name".into()))?;
                self.entries.push(DictionaryEntry { version: decision.ruleset.clone(), rules: Vec::new() });
                self.by_version.insert(decision.ruleset.clone(), id);
                changed = true;
                id
            }
        };
        let entry = self
            .entries
            .get_mut(id as usize)
            .ok_or_else(|| RecordError(format!("rule-set version {id} is missing")))?;
        let mut indexes = Vec::with_capacity(decision.rules.len());
        for t in &decision.rules {
            let at = match entry.rules.iter().position(|(r, v)| *r == t.rule && *v == t.version) {
                Some(at) => at,
                None => {
                    entry.rules.push((t.rule.clone(), t.version.clone()));
                    changed = true;
                    entry.rules.len().saturating_sub(1)
                }
            };
            indexes.push(u32::try_from(at).map_err(|_| RecordError("too many rules in one version".into()))?);
        }
        Ok((id, indexes, changed.then_some(id)))
    }

    /// Entry `id`.
    pub fn entry(&self, id: u32) -> Option<&DictionaryEntry> {
        self.entries.get(id as usize)
    }
}
