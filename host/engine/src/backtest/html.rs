//! The backtest report as one self-contained HTML file: the transition
//! matrix as a shaded table and a bar chart of what changed, the score
//! distributions side by side, reasons, rules and labels. Inline CSS and
//! SVG only: no script, no fetch, nothing outside the file.

use std::fmt::Write;

use super::{Report, SCORE_BUCKET_WIDTH};

/// Outcomes in the order a reader expects them.
const OUTCOMES: [&str; 4] = ["approve", "review", "decline", "reject"];

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Outcomes present in the report, known ones first.
fn outcomes(report: &Report) -> Vec<String> {
    let mut all: Vec<String> = OUTCOMES.iter().map(|o| (*o).to_owned()).collect();
    for t in &report.transitions {
        for o in [&t.from, &t.to] {
            if !all.contains(o) {
                all.push(o.clone());
            }
        }
    }
    all
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { "0".into() } else { format!("{:.2}", part as f64 * 100.0 / whole as f64) }
}

fn matrix(out: &mut String, report: &Report) {
    let names = outcomes(report);
    let max = report.transitions.iter().map(|t| t.count).max().unwrap_or(0).max(1);
    let _ = write!(out, "<table class=\"matrix\"><tr><th>live ↓ / candidate →</th>");
    for to in &names {
        let _ = write!(out, "<th>{}</th>", escape(to));
    }
    out.push_str("</tr>");
    for from in &names {
        let _ = write!(out, "<tr><th>{}</th>", escape(from));
        for to in &names {
            let count = report.transitions.iter().find(|t| &t.from == from && &t.to == to).map_or(0, |t| t.count);
            // Shade by count (square root, so small cells stay visible).
            let alpha = if count == 0 { 0.0 } else { 0.08 + 0.72 * (count as f64 / max as f64).sqrt() };
            let hue = if from == to { "46,125,50" } else { "198,40,40" };
            let _ = write!(
                out,
                "<td style=\"background:rgba({hue},{alpha:.3})\" title=\"{} → {}\">{count}</td>",
                escape(from),
                escape(to)
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

/// Horizontal bars, one per (label, value).
fn bars(out: &mut String, rows: &[(String, u64)], colour: &str) {
    if rows.is_empty() {
        out.push_str("<p class=\"note\">none</p>");
        return;
    }
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let (width, row) = (640.0, 22.0);
    let height = row * rows.len() as f64 + 4.0;
    let _ = write!(out, "<svg width=\"{}\" height=\"{height}\" role=\"img\">", width + 260.0);
    for (i, (label, value)) in rows.iter().enumerate() {
        let y = i as f64 * row + 2.0;
        let w = (*value as f64 / max as f64 * width).max(1.0);
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{:.1}\" class=\"label\">{}</text><rect x=\"180\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\">{value}</text>",
            y + 15.0,
            escape(label),
            row - 6.0,
            186.0 + w,
            y + 15.0
        );
    }
    out.push_str("</svg>");
}

/// The score distributions as grouped columns, live and candidate.
fn distribution(out: &mut String, report: &Report) {
    let (live, candidate) = (&report.scores.live, &report.scores.candidate);
    let buckets = live.len().max(candidate.len());
    let max = live.iter().chain(candidate).copied().max().unwrap_or(0).max(1);
    let (col, height) = (36.0, 220.0);
    let width = col * buckets as f64 + 60.0;
    let _ = write!(out, "<svg width=\"{width}\" height=\"{}\" role=\"img\">", height + 40.0);
    for i in 0..buckets {
        let x = 40.0 + i as f64 * col;
        for (j, (values, colour)) in [(live, "#546e7a"), (candidate, "#ef6c00")].into_iter().enumerate() {
            let v = values.get(i).copied().unwrap_or(0);
            // Log scale: the tail (declines) is what matters and is small.
            let h = if v == 0 { 0.0 } else { ((v as f64).ln_1p() / (max as f64).ln_1p() * height).max(1.0) };
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"><title>{} {}: {v}</title></rect>",
                x + j as f64 * (col / 2.0 - 1.0),
                height - h + 10.0,
                col / 2.0 - 2.0,
                if j == 0 { "live" } else { "candidate" },
                i as u32 * SCORE_BUCKET_WIDTH
            );
        }
        if i % 2 == 0 {
            let _ = write!(
                out,
                "<text x=\"{x:.1}\" y=\"{:.1}\" class=\"axis\">{}</text>",
                height + 28.0,
                i as u32 * SCORE_BUCKET_WIDTH
            );
        }
    }
    out.push_str("</svg><p class=\"note\">aggregated score, buckets of 50 points (the last is 1000), log scale; <span style=\"color:#546e7a\">■ live</span> <span style=\"color:#ef6c00\">■ candidate</span></p>");
}

impl Report {
    /// The report as a self-contained HTML page titled `title`.
    pub fn html(&self, title: &str) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
             body{{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:980px;color:#222}}\
             table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}\
             th{{background:#f5f5f5}}.matrix td{{min-width:70px}}.note{{color:#666;font-size:12px}}\
             svg text{{font-size:12px}}svg .axis{{fill:#666}}h2{{margin-top:1.6em}}</style></head><body>",
            escape(title)
        );
        let _ = write!(out, "<h1>{}</h1>", escape(title));
        let _ = write!(
            out,
            "<p>{} lines, {} decided on both sides, <b>{} changed ({}%)</b>.</p>",
            self.lines,
            self.decided,
            self.changed,
            percent(self.changed, self.decided)
        );
        if let Some(scope) = &self.scope {
            let _ = write!(
                out,
                "<p class=\"note\">scope: from {} to {}, source accounts sampled {}%, {} decided lines outside the range</p>",
                escape(scope.from.as_deref().unwrap_or("the start")),
                escape(scope.to.as_deref().unwrap_or("the end")),
                scope.sample_percent.unwrap_or(100),
                scope.outside
            );
        }
        out.push_str("<h2>Outcome transitions</h2>");
        matrix(&mut out, self);
        let changed: Vec<(String, u64)> = self
            .transitions
            .iter()
            .filter(|t| t.from != t.to)
            .map(|t| (format!("{} → {}", t.from, t.to), t.count))
            .collect();
        out.push_str("<h3>What changes</h3>");
        bars(&mut out, &changed, "#c62828");
        out.push_str("<h3>Volume</h3><table><tr><th>live</th><th>candidate</th><th>count</th><th>volume</th></tr>");
        for t in &self.transitions {
            let volume: Vec<String> = t.volume.iter().map(|(c, v)| format!("{v} {}", escape(c))).collect();
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&t.from),
                escape(&t.to),
                t.count,
                volume.join("<br>")
            );
        }
        out.push_str("</table><h2>Score distribution</h2>");
        distribution(&mut out, self);
        out.push_str("<h2>Reasons</h2>");
        let mut reasons: Vec<(String, u64)> = self.reasons_gained.iter().map(|(r, n)| (format!("+{r}"), *n)).collect();
        reasons.extend(self.reasons_lost.iter().map(|(r, n)| (format!("−{r}"), *n)));
        bars(&mut out, &reasons, "#1565c0");
        out.push_str("<h2>Risk rules</h2><table><tr><th>rule</th><th>calls</th><th>total live</th><th>total candidate</th><th>calls changed</th></tr>");
        for (rule, r) in &self.rules {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(rule),
                r.calls,
                r.live_total,
                r.candidate_total,
                r.changed
            );
        }
        out.push_str("</table>");
        if let Some(l) = &self.labels {
            let _ = write!(
                out,
                "<h2>Labels</h2><p>{} labelled decisions (flagged = any outcome but approve)</p><table><tr><th></th><th>live</th><th>candidate</th></tr>",
                l.labelled
            );
            for (name, a, b) in [
                ("fraud caught", l.live.caught, l.candidate.caught),
                ("fraud missed", l.live.missed, l.candidate.missed),
                ("false positives", l.live.false_positives, l.candidate.false_positives),
                ("legitimate approved", l.live.true_negatives, l.candidate.true_negatives),
            ] {
                let _ = write!(out, "<tr><th>{name}</th><td>{a}</td><td>{b}</td></tr>");
            }
            out.push_str("</table>");
        }
        out.push_str("</body></html>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_nothing_is_fetched() {
        let mut report = Report::default();
        report.transitions.push(super::super::Transition {
            from: "approve".into(),
            to: "<script>".into(),
            count: 3,
            volume: Default::default(),
        });
        report.reasons_gained.insert("A&B".into(), 1);
        let html = report.html("t \"x\"");
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert!(html.contains("+A&amp;B"));
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("src="));
    }
}
