//! Running rules natively (not in Wasm): the capability functions are routed
//! to a [`NativeHost`] installed for the duration of a call. The testing
//! fake ([`crate::testing::FakeHost`]) is one such host; the host's
//! benchmark installs one backed by its real ledger to measure the same rule
//! code compiled natively, as the reference limit for the Wasm path.

use std::cell::RefCell;
use std::rc::Rc;

pub use crate::types::ParamValue;
use crate::{Account, Decimal, HistoryStats, LogLevel};

/// What a natively running rule may ask; mirrors the WIT `host` interface.
pub trait NativeHost {
    /// A whole parameter (not a map).
    fn param(&self, name: &str) -> Option<ParamValue>;
    /// One entry of a map parameter.
    fn param_entry(&self, name: &str, key: &str) -> Option<ParamValue>;
    /// History of `account` as source in `(t − window, t]`, amount in `[min, max)`.
    fn history(&self, account: &str, window_seconds: u64, range: Option<(Decimal, Decimal)>) -> HistoryStats;
    /// Facts about an account.
    fn account(&self, id: &str) -> Option<Account>;
    /// Membership in an operator list.
    fn list_contains(&self, list: &str, value: &str) -> bool;
    /// A log line.
    fn log(&self, level: LogLevel, message: &str);
}

thread_local! {
    static HOST: RefCell<Option<Rc<dyn NativeHost>>> = const { RefCell::new(None) };
}

/// Runs `f` with `host` answering the capability functions on this thread.
pub fn with_host<T>(host: Rc<dyn NativeHost>, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<Rc<dyn NativeHost>>);
    impl Drop for Reset {
        fn drop(&mut self) {
            HOST.with(|h| *h.borrow_mut() = self.0.take());
        }
    }
    let previous = HOST.with(|h| h.borrow_mut().replace(host));
    let _reset = Reset(previous);
    f()
}

fn host() -> Rc<dyn NativeHost> {
    HOST.with(|h| h.borrow().clone())
        .expect("a rule capability was called natively outside FakeHost::validate/score or native::with_host")
}

pub(crate) fn param(name: &str) -> Option<ParamValue> {
    host().param(name)
}

pub(crate) fn param_entry(name: &str, key: &str) -> Option<ParamValue> {
    host().param_entry(name, key)
}

pub(crate) fn history(account: &str, window_seconds: u64, range: Option<(Decimal, Decimal)>) -> HistoryStats {
    host().history(account, window_seconds, range)
}

pub(crate) fn account(id: &str) -> Option<Account> {
    host().account(id)
}

pub(crate) fn list_contains(list: &str, value: &str) -> bool {
    host().list_contains(list, value)
}

pub(crate) fn log(level: LogLevel, message: &str) {
    host().log(level, message)
}
