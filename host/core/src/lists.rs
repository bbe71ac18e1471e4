//! The operator lists of a rule set (`lists/*.txt`), which a rule reads
//! through `list-contains`.

use std::collections::{HashMap, HashSet};

/// The operator lists of a rule set, by name.
#[derive(Debug, Default)]
pub struct Lists {
    lists: foldhash::HashMap<String, foldhash::HashSet<String>>,
}

impl Lists {
    /// Whether `value` is in list `name` (false for an unknown list).
    pub fn contains(&self, name: &str, value: &str) -> bool {
        self.lists.get(name).is_some_and(|l| l.contains(value))
    }

    /// Whether a list exists.
    pub fn has(&self, name: &str) -> bool {
        self.lists.contains_key(name)
    }

    /// Lists from ready sets (used by rule-level test cases).
    pub fn from_sets(lists: HashMap<String, HashSet<String>>) -> Self {
        Lists { lists: lists.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect() }
    }

    /// Adds (or replaces) list `name`.
    pub fn insert(&mut self, name: String, values: HashSet<String>) {
        self.lists.insert(name, values.into_iter().collect());
    }

    /// Parses list text: one value per line, trimmed; blank lines and lines
    /// starting with `#` are skipped.
    pub fn parse(text: &str) -> HashSet<String> {
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
    }
}
