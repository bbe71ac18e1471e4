//! What a rule call can end in, as the decision records it: a verdict or a
//! failure of a named kind, and the log lines the rule wrote. The sandbox
//! produces them; decisions and the ledger store them.

/// Why a rule call failed. These are the failure kinds of RULES.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// The guest trapped (panic, unreachable, bad host call).
    Trap,
    /// The fuel budget ran out.
    Fuel,
    /// The call used more CPU time than its deadline allows.
    Deadline,
    /// The memory cap was hit.
    Memory,
    /// The result broke the output contract.
    InvalidOutput,
}

impl FailureKind {
    /// Every kind, in declaration order.
    pub const ALL: [FailureKind; 5] =
        [FailureKind::Trap, FailureKind::Fuel, FailureKind::Deadline, FailureKind::Memory, FailureKind::InvalidOutput];

    /// The spelling in decision records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Fuel => "fuel",
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
            FailureKind::InvalidOutput => "invalid-output",
        }
    }

    /// The kind spelled `text`, if any.
    pub fn parse(text: &str) -> Option<FailureKind> {
        FailureKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// A failed call: its kind and a message for the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// Details for the analyst.
    pub message: String,
}

/// What a rule returned, validated against the output contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Validation passed.
    Accept,
    /// Validation rejected with a code.
    Reject {
        /// `[A-Z0-9_]{1,32}`.
        code: String,
        /// Explanation, at most `MESSAGE_BYTES_MAX` bytes.
        message: String,
    },
    /// A risk score.
    Score {
        /// 0..=1000.
        score: u32,
        /// Valid codes, at most `REASONS_MAX`.
        reasons: Vec<String>,
    },
}

/// The level of a rule's log line (the WIT `log-level`, in its order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogLevel {
    /// `trace`.
    Trace,
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
}

impl LogLevel {
    /// Every level, in the contract's order (a level's index is its WIT
    /// discriminant and its number in a stored record).
    pub const ALL: [LogLevel; 5] = [LogLevel::Trace, LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error];

    /// The spelling in decision records.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// The level spelled `text`, if any.
    pub fn parse(text: &str) -> Option<LogLevel> {
        LogLevel::ALL.into_iter().find(|l| l.as_str() == text)
    }

    /// The level with WIT discriminant `index`, if any.
    pub fn from_index(index: usize) -> Option<LogLevel> {
        LogLevel::ALL.get(index).copied()
    }
}

/// A log line a rule recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// `trace` … `error`.
    pub level: LogLevel,
    /// The message, possibly cut to the per-call cap.
    pub message: String,
}
