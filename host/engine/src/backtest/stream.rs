//! The backtest in one pass: the live and the candidate pipeline (each over
//! its own scratch ledger) decide the stream a chunk at a time, in order, and
//! each pair of decisions is counted as it is made — no output is written
//! and nothing is parsed back.

use std::collections::HashMap;

use super::{Report, Seen};
use crate::pipeline::Pipeline;
use crate::ruleset::RuleSet;
use crate::run::Progress;
use rulehost_core::decision::Record;
use rulehost_core::model::Transaction;

/// Lines decided by both sides before their pairs are counted.
pub const CHUNK_LINES: usize = 4_096;

/// One side of a backtest: a pipeline over its own scratch ledger, and its
/// rule set.
pub struct Side<'a> {
    /// The pipeline.
    pub pipeline: &'a Pipeline,
    /// The rule set it decides with.
    pub ruleset: &'a RuleSet,
}

/// How a one-pass backtest runs.
pub struct StreamOptions<'a> {
    /// Evaluating threads.
    pub pool: &'a rayon::ThreadPool,
    /// Transactions evaluated at once.
    pub window: usize,
    /// Transaction id → fraud (true) or legitimate.
    pub labels: &'a HashMap<String, bool>,
}

/// Decides every line of `input` (JSON Lines; a final newline ends the last
/// line) with both sides in order and compares them; only transactions
/// `compared` accepts are counted (the rest are still decided, for the
/// history they make). Returns the report and the lines decided but not
/// compared.
pub fn backtest_stream(
    live: Side<'_>,
    candidate: Side<'_>,
    input: &[u8],
    options: &StreamOptions<'_>,
    compared: impl Fn(&Transaction) -> bool,
    mut progress: Option<Box<dyn Progress>>,
) -> (Report, u64) {
    let body = input.strip_suffix(b"\n").unwrap_or(input);
    let mut lines = (!input.is_empty()).then(|| body.split(|b| *b == b'\n')).into_iter().flatten();
    let mut report = Report::default();
    let (mut next_line, mut outside) = (1u64, 0u64);
    loop {
        let chunk: Vec<&[u8]> = lines.by_ref().take(CHUNK_LINES).collect();
        if chunk.is_empty() {
            break;
        }
        // Parsed once; both sides decide the same parsed lines.
        let inputs: Vec<_> = chunk
            .iter()
            .zip(next_line..)
            .map(|(l, n)| (n, crate::run::parse_bytes(n, l.strip_suffix(b"\r").unwrap_or(l))))
            .collect();
        let l = live.pipeline.decide_many(live.ruleset, &inputs, options.pool, options.window);
        let c = candidate.pipeline.decide_many(candidate.ruleset, &inputs, options.pool, options.window);
        for ((input, l), c) in inputs.iter().zip(&l).zip(&c) {
            report.lines = report.lines.saturating_add(1);
            let (Ok(p), Record::Decision { decision: dl, .. }, Record::Decision { decision: dc, .. }) =
                (&input.1, l, c)
            else {
                continue;
            };
            if !compared(&p.tx) {
                outside = outside.saturating_add(1);
                continue;
            }
            let fraud = options.labels.get(&p.tx.id).copied();
            let volume = Some((p.tx.currency.as_str(), p.tx.amount));
            report.add(&Seen::of_decision(dl), &Seen::of_decision(dc), volume, fraud);
        }
        next_line = next_line.saturating_add(chunk.len() as u64);
        if let Some(p) = progress.as_mut() {
            p.advance(next_line.saturating_sub(1));
        }
    }
    if !options.labels.is_empty() {
        report.labels.get_or_insert_with(Default::default);
    }
    (report, outside)
}
