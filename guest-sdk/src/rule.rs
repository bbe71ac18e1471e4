//! The two kinds of rule, what they declare, what they return, and the export
//! macros that turn a rule type into a Wasm component.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::Transaction;

/// The type of a manifest parameter, as a rule declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamType {
    /// A string.
    Text,
    /// A 64-bit signed integer.
    Integer,
    /// An exact decimal (write it as a string in the manifest: `"10000.00"`).
    Decimal,
    /// A list of strings.
    TextList,
    /// A table from string keys to integers.
    IntegerMap,
    /// A table from string keys to decimals.
    DecimalMap,
    /// A table from string keys to strings.
    TextMap,
}

/// What a rule declares about itself, read once when the rule set loads.
///
/// The host refuses a rule set whose manifest misses a declared parameter,
/// gives it the wrong type, or lacks a declared list, so a rule never meets
/// those surprises at run time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleInfo {
    /// Declared parameters, all required.
    pub params: Vec<(String, ParamType)>,
    /// Declared operator lists, each must exist in the rule set.
    pub lists: Vec<String>,
    /// The longest history window the rule asks for, in seconds (0: none).
    pub history_window_seconds_max: u64,
}

impl RuleInfo {
    /// A rule that reads nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a required parameter of type `ty`.
    pub fn param(mut self, name: &str, ty: ParamType) -> Self {
        self.params.push((name.to_owned(), ty));
        self
    }

    /// Declares an operator list the rule reads.
    pub fn list(mut self, name: &str) -> Self {
        self.lists.push(name.to_owned());
        self
    }

    /// Declares the longest history window the rule asks for, in seconds.
    pub fn history_window_seconds(mut self, seconds: u64) -> Self {
        self.history_window_seconds_max = self.history_window_seconds_max.max(seconds);
        self
    }
}

/// The result of a validation rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Validation {
    /// The transaction passes this rule.
    Accept,
    /// The transaction is rejected with `code` (`[A-Z0-9_]{1,32}`).
    Reject {
        /// Machine-readable reason, `[A-Z0-9_]{1,32}`.
        code: String,
        /// Human-readable explanation.
        message: String,
    },
}

impl Validation {
    /// A rejection with `code` and `message`.
    pub fn reject(code: &str, message: impl Into<String>) -> Self {
        Validation::Reject { code: code.to_owned(), message: message.into() }
    }
}

/// The result of a risk rule: a score in `0..=1000` and its reason codes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Score {
    /// 0..=1000; the host treats anything larger as invalid output.
    pub score: u32,
    /// Reason codes, each `[A-Z0-9_]{1,32}`.
    pub reasons: Vec<String>,
}

impl Score {
    /// No risk, no reasons.
    pub fn zero() -> Self {
        Score::default()
    }

    /// A score with one reason.
    pub fn new(score: u32, reason: &str) -> Self {
        Score { score, reasons: vec![reason.to_owned()] }
    }

    /// Adds `score` with `reason` (used by rules with independent parts).
    pub fn add(mut self, score: u32, reason: &str) -> Self {
        self.score += score;
        self.reasons.push(reason.to_owned());
        self
    }
}

/// A validation rule: accepts or rejects a transaction.
pub trait ValidationRule {
    /// Declares parameters, lists and history windows the rule reads.
    fn declare() -> RuleInfo;
    /// Decides whether the transaction passes.
    fn validate(tx: &Transaction) -> Validation;
}

/// A risk rule: scores a transaction.
pub trait RiskRule {
    /// Declares parameters, lists and history windows the rule reads.
    fn declare() -> RuleInfo;
    /// Scores the transaction, 0..=1000 with reasons.
    fn score(tx: &Transaction) -> Score;
}

/// Exports a [`ValidationRule`] as the rule's Wasm component interface.
///
/// Use it once per crate, at the top level: `export_validation_rule!(MyRule);`.
/// On the host target it only checks the trait, so the crate also builds
/// natively for its unit tests.
#[macro_export]
macro_rules! export_validation_rule {
    ($rule:ty) => {
        const _: () = {
            const fn __rulehost_requires_validation_rule<T: $crate::ValidationRule>() {}
            __rulehost_requires_validation_rule::<$rule>();
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __RulehostExport;
            impl $crate::wit::exports::rulehost::rules::rule::Guest for __RulehostExport {
                fn describe() -> $crate::wit::exports::rulehost::rules::rule::RuleInfo {
                    $crate::__private::describe(
                        $crate::wit::exports::rulehost::rules::rule::RuleKind::Validation,
                        <$rule as $crate::ValidationRule>::declare(),
                    )
                }
                fn evaluate(tx: $crate::__private::Vec<u8>) -> $crate::wit::exports::rulehost::rules::rule::Verdict {
                    $crate::__private::evaluate_validation::<$rule>(tx)
                }
            }
    $crate::wit::export_world!(__RulehostExport with_types_in $crate::wit);
        };
    };
}

/// Exports a [`RiskRule`] as the rule's Wasm component interface.
///
/// Use it once per crate, at the top level: `export_risk_rule!(MyRule);`.
/// On the host target it only checks the trait, so the crate also builds
/// natively for its unit tests.
#[macro_export]
macro_rules! export_risk_rule {
    ($rule:ty) => {
        const _: () = {
            const fn __rulehost_requires_risk_rule<T: $crate::RiskRule>() {}
            __rulehost_requires_risk_rule::<$rule>();
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __RulehostExport;
            impl $crate::wit::exports::rulehost::rules::rule::Guest for __RulehostExport {
                fn describe() -> $crate::wit::exports::rulehost::rules::rule::RuleInfo {
                    $crate::__private::describe(
                        $crate::wit::exports::rulehost::rules::rule::RuleKind::Risk,
                        <$rule as $crate::RiskRule>::declare(),
                    )
                }
                fn evaluate(tx: $crate::__private::Vec<u8>) -> $crate::wit::exports::rulehost::rules::rule::Verdict {
                    $crate::__private::evaluate_risk::<$rule>(tx)
                }
            }
    $crate::wit::export_world!(__RulehostExport with_types_in $crate::wit);
        };
    };
}

#[cfg(target_arch = "wasm32")]
pub mod wasm {
    use alloc::vec::Vec;
    use core::mem::ManuallyDrop;

    use super::{ParamType, RiskRule, RuleInfo, Validation, ValidationRule};
    use crate::Transaction;
    use crate::wit::exports::rulehost::rules::rule as r;
    use crate::wit::rulehost::rules::types as w;

    /// The `describe` export: the rule's declaration in WIT form.
    pub fn describe(kind: r::RuleKind, info: RuleInfo) -> r::RuleInfo {
        r::RuleInfo {
            kind,
            params: info
                .params
                .into_iter()
                .map(|(name, ty)| r::ParamSpec {
                    name,
                    type_: match ty {
                        ParamType::Text => w::ParamType::Text,
                        ParamType::Integer => w::ParamType::Integer,
                        ParamType::Decimal => w::ParamType::Decimal,
                        ParamType::TextList => w::ParamType::TextList,
                        ParamType::IntegerMap => w::ParamType::IntegerMap,
                        ParamType::DecimalMap => w::ParamType::DecimalMap,
                        ParamType::TextMap => w::ParamType::TextMap,
                    },
                })
                .collect(),
            lists: info.lists,
            history_window_seconds_max: info.history_window_seconds_max,
        }
    }

    /// Decodes the host's transaction encoding. The host only sends
    /// well-formed bytes; anything else is a broken host, and the call traps.
    ///
    /// Neither the bytes nor the transaction are freed: every call starts
    /// from the instance's post-instantiation state (the contract), so
    /// freeing what a call allocated would only cost the call time.
    fn decode(bytes: Vec<u8>) -> ManuallyDrop<Transaction> {
        let bytes = ManuallyDrop::new(bytes);
        match crate::encoding::decode_from_host(&bytes) {
            Some(tx) => ManuallyDrop::new(tx),
            None => panic!("the host sent a transaction that does not follow rulehost:rules@2.0.0"),
        }
    }

    /// The `evaluate` export of a validation rule.
    pub fn evaluate_validation<R: ValidationRule>(tx: Vec<u8>) -> r::Verdict {
        match R::validate(&decode(tx)) {
            Validation::Accept => r::Verdict::Accept,
            Validation::Reject { code, message } => r::Verdict::Reject(r::Rejection { code, message }),
        }
    }

    /// The `evaluate` export of a risk rule.
    pub fn evaluate_risk<R: RiskRule>(tx: Vec<u8>) -> r::Verdict {
        let s = R::score(&decode(tx));
        r::Verdict::Score(r::RiskScore { score: s.score, reasons: s.reasons })
    }

    /// The `no_std` panic handler: log the message, then trap.
    pub fn report_panic(info: &core::panic::PanicInfo<'_>) -> ! {
        let message = alloc::format!("panic: {info}");
        crate::wit::rulehost::rules::host::log(crate::wit::rulehost::rules::types::LogLevel::Error, &message);
        core::arch::wasm32::unreachable()
    }
}
