//! `rulehost backtest`: what would a candidate rule set have decided? The
//! same stream is decided in its order by the live rule set and by the
//! candidate, each on its own scratch ledger (`stream.rs`, one pass), and
//! each pair is compared: an outcome transition matrix with counts and money
//! volume per currency, reasons gained and lost, each rule's score change,
//! the score distributions, and, given labels of known fraud, what was
//! caught, missed and flagged wrongly before and after. Shadow mode counts
//! its pairs with the same [`Report::add`]; [`compare`] does it for two
//! files of records.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod html;
mod stream;

pub use stream::{CHUNK_LINES, Side, StreamOptions, backtest_stream};

/// Width of a score bucket of the distributions, in points.
pub const SCORE_BUCKET_WIDTH: u32 = 50;
/// Buckets of a score distribution: `0..50`, …, `950..1000`, and `1000`.
pub const SCORE_BUCKETS: usize = (crate::pipeline::SCORE_MAX / SCORE_BUCKET_WIDTH) as usize + 1;

/// One cell of the transition matrix.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Transition {
    /// Live outcome.
    pub from: String,
    /// Candidate outcome.
    pub to: String,
    /// Transactions.
    pub count: u64,
    /// Their amounts, per currency (decimal strings).
    pub volume: BTreeMap<String, Decimal>,
}

/// A rule's scores, live and candidate.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RuleScores {
    /// Calls that returned a score on both sides.
    pub calls: u64,
    /// Sum of the live scores.
    pub live_total: u64,
    /// Sum of the candidate's scores.
    pub candidate_total: u64,
    /// Calls whose score changed.
    pub changed: u64,
}

/// Against labels: flagged means any outcome but `approve`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Confusion {
    /// Fraud flagged.
    pub caught: u64,
    /// Fraud approved.
    pub missed: u64,
    /// Legitimate traffic flagged.
    pub false_positives: u64,
    /// Legitimate traffic approved.
    pub true_negatives: u64,
}

/// What labels say, before and after.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LabelReport {
    /// Labelled decisions seen.
    pub labelled: u64,
    /// With the live rule set.
    pub live: Confusion,
    /// With the candidate.
    pub candidate: Confusion,
}

/// The whole backtest.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Input lines.
    pub lines: u64,
    /// Lines that are decisions on both sides (not error records).
    pub decided: u64,
    /// Decisions whose outcome, score or reasons changed.
    pub changed: u64,
    /// The outcome transition matrix, every non-empty cell.
    pub transitions: Vec<Transition>,
    /// Reasons the candidate adds, with how many decisions gain each.
    pub reasons_gained: BTreeMap<String, u64>,
    /// Reasons the candidate drops.
    pub reasons_lost: BTreeMap<String, u64>,
    /// Per risk rule (by name).
    pub rules: BTreeMap<String, RuleScores>,
    /// Present when labels were given.
    pub labels: Option<LabelReport>,
    /// Aggregated scores of the decisions compared, live and candidate, in
    /// buckets of [`SCORE_BUCKET_WIDTH`] points.
    #[serde(default)]
    pub scores: ScoreDistribution,
    /// What part of the stream was compared, when not all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

/// Aggregated scores, counted per bucket (`[i]` holds scores in
/// `i * SCORE_BUCKET_WIDTH ..`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScoreDistribution {
    /// With the live rule set.
    pub live: Vec<u64>,
    /// With the candidate.
    pub candidate: Vec<u64>,
}

impl Default for ScoreDistribution {
    fn default() -> Self {
        ScoreDistribution { live: vec![0; SCORE_BUCKETS], candidate: vec![0; SCORE_BUCKETS] }
    }
}

fn add_score(buckets: &mut Vec<u64>, score: u64) {
    let i = usize::try_from(score / u64::from(SCORE_BUCKET_WIDTH)).unwrap_or(usize::MAX).min(SCORE_BUCKETS - 1);
    if buckets.len() < SCORE_BUCKETS {
        buckets.resize(SCORE_BUCKETS, 0);
    }
    buckets[i] = buckets[i].saturating_add(1);
}

/// The part of a stream a backtest compared.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Scope {
    /// Transactions at or after this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Transactions before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Only source accounts whose stable bucket (`rollout::bucket`) is
    /// below this percentage were decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_percent: Option<u8>,
    /// Decided lines outside `from..to` (decided, for the history they
    /// make, but not compared).
    pub outside: u64,
}

/// What a comparison reads of one decision.
pub struct Seen<'a> {
    /// The outcome's spelling.
    pub outcome: &'a str,
    /// The aggregated score.
    pub score: Option<u64>,
    /// The reasons, in order.
    pub reasons: Vec<&'a str>,
    /// Each risk rule's score, by rule name.
    pub scores: Vec<(&'a str, u64)>,
}

impl<'a> Seen<'a> {
    /// From a record's JSON.
    pub fn of_value(v: &'a Value) -> Self {
        Seen {
            outcome: v["outcome"].as_str().unwrap_or("?"),
            score: v["score"].as_u64(),
            reasons: v["reasons"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default(),
            scores: v["rules"]
                .as_array()
                .map(|rules| {
                    rules
                        .iter()
                        .filter(|r| r["result"] == "score")
                        .filter_map(|r| Some((r["rule"].as_str()?, r["score"].as_u64()?)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// From a decision, without writing its JSON.
    pub fn of_decision(d: &'a rulehost_core::decision::Decision) -> Self {
        Seen {
            outcome: d.outcome.as_str(),
            score: Some(u64::from(d.score)),
            reasons: d.reasons.iter().map(String::as_str).collect(),
            scores: d
                .rules
                .iter()
                .filter_map(|t| match &t.result {
                    rulehost_core::decision::RuleResult::Score { score, .. } => Some((&*t.rule, u64::from(*score))),
                    _ => None,
                })
                .collect(),
        }
    }

    fn score_of(&self, rule: &str) -> Option<u64> {
        self.scores.iter().rev().find(|(r, _)| *r == rule).map(|(_, s)| *s)
    }
}

fn count(cm: &mut Confusion, fraud: bool, decision: &Seen<'_>) {
    let flagged = decision.outcome != "approve";
    let cell = match (fraud, flagged) {
        (true, true) => &mut cm.caught,
        (true, false) => &mut cm.missed,
        (false, true) => &mut cm.false_positives,
        (false, false) => &mut cm.true_negatives,
    };
    *cell = cell.saturating_add(1);
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n = n.saturating_add(1),
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

/// Compares the records of the live and the candidate run of the same
/// `transactions` (one JSON line each, in order). `labels`: transaction id
/// → fraud (true) or legitimate.
pub fn compare(live: &[Value], candidate: &[Value], transactions: &[Value], labels: &HashMap<String, bool>) -> Report {
    let mut report = Report { lines: live.len().max(candidate.len()) as u64, ..Report::default() };
    for (i, (l, c)) in live.iter().zip(candidate).enumerate() {
        let (sl, sc) = (Seen::of_value(l), Seen::of_value(c));
        if sl.outcome == "error" || sc.outcome == "error" {
            continue;
        }
        let tx = transactions.get(i);
        let volume = tx.and_then(|t| {
            Some((t["currency"].as_str()?, t["amount"].as_str().and_then(|a| a.parse::<Decimal>().ok())?))
        });
        let fraud = l["id"].as_str().and_then(|id| labels.get(id)).copied();
        report.add(&sl, &sc, volume, fraud);
    }
    if !labels.is_empty() {
        report.labels.get_or_insert_with(LabelReport::default);
    }
    report
}

impl Report {
    /// Counts one transaction decided by both sides: `volume` is its
    /// currency and amount, `fraud` its label if it has one. (`lines` is
    /// the caller's.)
    pub fn add(&mut self, l: &Seen<'_>, c: &Seen<'_>, volume: Option<(&str, Decimal)>, fraud: Option<bool>) {
        self.decided = self.decided.saturating_add(1);
        add_score(&mut self.scores.live, l.score.unwrap_or(0));
        add_score(&mut self.scores.candidate, c.score.unwrap_or(0));
        if (l.outcome, l.score, &l.reasons) != (c.outcome, c.score, &c.reasons) {
            self.changed = self.changed.saturating_add(1);
        }
        let at = self.transitions.binary_search_by(|t| (t.from.as_str(), t.to.as_str()).cmp(&(l.outcome, c.outcome)));
        let i = match at {
            Ok(i) => i,
            Err(i) => {
                let cell = Transition { from: l.outcome.to_owned(), to: c.outcome.to_owned(), ..Transition::default() };
                self.transitions.insert(i, cell);
                i
            }
        };
        let cell = &mut self.transitions[i];
        cell.count = cell.count.saturating_add(1);
        if let Some((currency, amount)) = volume {
            let v = cell.volume.entry(currency.to_owned()).or_default();
            *v = v.saturating_add(amount);
        }
        for r in c.reasons.iter().filter(|r| !l.reasons.contains(r)) {
            bump(&mut self.reasons_gained, r);
        }
        for r in l.reasons.iter().filter(|r| !c.reasons.contains(r)) {
            bump(&mut self.reasons_lost, r);
        }
        let mut seen: Vec<&str> = Vec::with_capacity(l.scores.len());
        for (rule, _) in &l.scores {
            if seen.contains(rule) {
                continue;
            }
            seen.push(rule);
            if let (Some(live_score), Some(candidate_score)) = (l.score_of(rule), c.score_of(rule)) {
                let e = match self.rules.get_mut(*rule) {
                    Some(e) => e,
                    None => self.rules.entry((*rule).to_owned()).or_default(),
                };
                e.calls = e.calls.saturating_add(1);
                e.live_total = e.live_total.saturating_add(live_score);
                e.candidate_total = e.candidate_total.saturating_add(candidate_score);
                if live_score != candidate_score {
                    e.changed = e.changed.saturating_add(1);
                }
            }
        }
        if let Some(fraud) = fraud {
            let labels = self.labels.get_or_insert_with(LabelReport::default);
            labels.labelled = labels.labelled.saturating_add(1);
            count(&mut labels.live, fraud, l);
            count(&mut labels.candidate, fraud, c);
        }
    }
}

/// Reads a labels file: one `{"id": …, "label": "fraud" | "legit"}` per
/// line; the error names the line.
pub fn parse_labels(text: &str) -> Result<HashMap<String, bool>, String> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let n = i.saturating_add(1);
        let v: Value = rulehost_core::input::strict::from_str(line).map_err(|e| match e {
            rulehost_core::input::strict::StrictError::Malformed(e) => format!("line {n}: not JSON: {e}"),
            rulehost_core::input::strict::StrictError::DuplicateKey(k) => format!("line {n}: `{k}` appears twice"),
        })?;
        let id = v["id"].as_str().ok_or_else(|| format!("line {n}: `id` must be a string"))?;
        let fraud = match v["label"].as_str() {
            Some("fraud") => true,
            Some("legit") => false,
            _ => return Err(format!("line {n}: `label` must be \"fraud\" or \"legit\"")),
        };
        out.insert(id.to_owned(), fraud);
    }
    Ok(out)
}

impl Report {
    /// A readable report.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "{} lines, {} decided on both sides, {} changed", self.lines, self.decided, self.changed);
        if let Some(scope) = &self.scope {
            let _ = writeln!(
                s,
                "scope: from {} to {}, sources sampled {}% ({} decided lines outside the range)",
                scope.from.as_deref().unwrap_or("the start"),
                scope.to.as_deref().unwrap_or("the end"),
                scope.sample_percent.unwrap_or(100),
                scope.outside
            );
        }
        let _ = writeln!(s, "\noutcome transitions (live → candidate):");
        for t in &self.transitions {
            let volume: Vec<String> = t.volume.iter().map(|(c, v)| format!("{v} {c}")).collect();
            let mark = if t.from == t.to { " " } else { "*" };
            let _ = writeln!(s, " {mark} {:>8} → {:<8} {:>8}  {}", t.from, t.to, t.count, volume.join(", "));
        }
        if !self.reasons_gained.is_empty() || !self.reasons_lost.is_empty() {
            let _ = writeln!(s, "\nreasons:");
            for (r, n) in &self.reasons_gained {
                let _ = writeln!(s, "   +{r} on {n}");
            }
            for (r, n) in &self.reasons_lost {
                let _ = writeln!(s, "   -{r} on {n}");
            }
        }
        let _ = writeln!(s, "\nrisk rules (total score live → candidate, calls changed):");
        for (rule, r) in &self.rules {
            let _ = writeln!(
                s,
                "   {rule:<20} {:>10} → {:<10} {} of {}",
                r.live_total, r.candidate_total, r.changed, r.calls
            );
        }
        if let Some(l) = &self.labels {
            let _ = writeln!(s, "\nlabels ({} labelled):        live  candidate", l.labelled);
            for (name, a, b) in [
                ("fraud caught", l.live.caught, l.candidate.caught),
                ("fraud missed", l.live.missed, l.candidate.missed),
                ("false positives", l.live.false_positives, l.candidate.false_positives),
            ] {
                let _ = writeln!(s, "   {name:<22} {a:>8} {b:>10}");
            }
        }
        s
    }
}
