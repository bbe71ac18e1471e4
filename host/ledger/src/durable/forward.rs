//! [`forward_ledger!`](crate::forward_ledger): a store's ledger type is a
//! [`Durable`](super::Durable) plus what the store owns (a file lock, lease
//! renewal); the macro forwards every [`Ledger`](crate::Ledger) method to it,
//! and gives the type the front's own methods (`stats`, `watermark`,
//! `reconcile`, `close`).

/// Implements [`Ledger`] for a store's ledger type by forwarding every
/// method to its [`Durable`](crate::durable::Durable) field, and gives it
/// the front's `stats`, `watermark`, `reconcile` and `close`:
/// `forward_ledger!(SqliteLedger, durable);`. With `upkeep = method`, the
/// type's `fn method(&mut self) -> Result<(), LedgerError>` runs before
/// every change (accounts, commit, hold resolution) and as
/// [`Ledger::maintain`](crate::Ledger::maintain):
/// `forward_ledger!(PostgresLedger, durable, upkeep = upkeep);`.
#[macro_export]
macro_rules! forward_ledger {
    ($ty:ty, $field:ident $(, upkeep = $upkeep:ident)?) => {
        impl $ty {
            /// Counters and commit latencies so far.
            pub fn stats(&self) -> $crate::durable::CommitStats {
                self.$field.stats()
            }

            /// The shared watermark (to observe durability without the ledger lock).
            pub fn watermark(&self) -> std::sync::Arc<$crate::Watermark> {
                self.$field.watermark()
            }

            /// Checks every invariant on the stored state, once every change
            /// made so far is durable.
            pub fn reconcile(&mut self) -> Result<$crate::durable::Report, $crate::LedgerError> {
                self.$field.reconcile()
            }

            /// Writes everything queued and stops the writer (what the store
            /// holds besides, such as leases, is given back on drop);
            /// returns the store's failure, if any.
            pub fn close(mut self) -> Result<(), $crate::LedgerError> {
                self.$field.close()
            }
        }

        impl $crate::Ledger for $ty {
            fn import_accounts(
                &mut self,
                accounts: &[$crate::__reexport::rulehost_core::model::Account],
            ) -> Result<usize, $crate::LedgerError> {
                $(self.$upkeep()?;)?
                self.$field.import_accounts(accounts)
            }
            fn account(&self, id: &str) -> Option<&$crate::__reexport::rulehost_core::model::Account> {
                self.$field.account(id)
            }
            fn account_ids(&self) -> Vec<String> {
                self.$field.account_ids()
            }
            fn balances(&self, id: &str) -> Option<$crate::Balances> {
                self.$field.balances(id)
            }
            fn admit(
                &self,
                source: &str,
                destination: &str,
                amount: $crate::__reexport::rust_decimal::Decimal,
                effect: $crate::Effect,
            ) -> Result<(), $crate::Refusal> {
                self.$field.admit(source, destination, amount, effect)
            }
            fn decision(&self, id: &str) -> Result<Option<$crate::StoredDecision>, $crate::LedgerError> {
                self.$field.decision(id)
            }
            fn record(&self, id: &str) -> Result<Option<$crate::DecisionRecord>, $crate::LedgerError> {
                self.$field.record(id)
            }
            fn history(
                &self,
                query: &$crate::__reexport::rulehost_core::facts::HistoryQuery<'_>,
            ) -> $crate::__reexport::rulehost_core::facts::HistoryStats {
                self.$field.history(query)
            }
            fn retain_history(&mut self, window_seconds_max: u64) {
                self.$field.retain_history(window_seconds_max)
            }
            fn commit(&mut self, commit: $crate::Commit<'_>) -> Result<$crate::Committed, $crate::LedgerError> {
                $(self.$upkeep()?;)?
                self.$field.commit(commit)
            }
            fn resolve_hold(&mut self, id: &str, approve: bool) -> Result<$crate::Resolution, $crate::LedgerError> {
                $(self.$upkeep()?;)?
                self.$field.resolve_hold(id, approve)
            }
            fn hold(&self, id: &str) -> Result<Option<$crate::Hold>, $crate::LedgerError> {
                self.$field.hold(id)
            }
            fn holds(&self) -> Result<Vec<$crate::Hold>, $crate::LedgerError> {
                self.$field.holds()
            }
            fn pending_holds(&self) -> Result<Vec<$crate::Hold>, $crate::LedgerError> {
                self.$field.pending_holds()
            }
            fn journal(&self, account: Option<&str>) -> Result<Vec<$crate::JournalEntry>, $crate::LedgerError> {
                self.$field.journal(account)
            }
            fn keep_ruleset(
                &mut self,
                archive: &std::sync::Arc<$crate::RulesetArchive>,
            ) -> Result<(), $crate::LedgerError> {
                self.$field.keep_ruleset(archive)
            }
            fn ruleset(&self, version: &str) -> Result<Option<$crate::RulesetArchive>, $crate::LedgerError> {
                self.$field.ruleset(version)
            }
            fn usage(&self) -> $crate::Usage {
                self.$field.usage()
            }
            fn sync_point(&self) -> $crate::SyncPoint {
                self.$field.sync_point()
            }
            fn maintain(&mut self) -> Result<(), $crate::LedgerError> {
                $(self.$upkeep()?;)?
                self.$field.maintain()
            }
            fn owned_partitions(&self) -> Option<Vec<u16>> {
                self.$field.owned_partitions()
            }
        }
    };
}
