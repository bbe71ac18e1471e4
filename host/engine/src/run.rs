//! `rulehost run`: streams JSON Lines through the pipeline in input order.
//!
//! Three stages on their own threads, joined by bounded channels of batches:
//! read + parse → decide → serialize + write. The decide stage evaluates a
//! small window of transactions at once on a thread pool and commits them one
//! by one in input order, redoing any evaluation whose reads a transaction
//! before it changed (see `Pipeline::decide_many`), so the output equals
//! processing the input one line after another. The writer acknowledges a
//! batch — writes it — only once the ledger has made it durable.

use std::io::{self, BufRead, Write};
use std::time::Instant;

use crossbeam_channel::bounded;

use crate::pipeline::Pipeline;
use crate::reload::RuleSource;
use rulehost_core::decision::Record;
use rulehost_core::files::{Line, read_line_bounded};
use rulehost_core::input::{InputError, ParsedTransaction, parse_transaction};
use rulehost_core::summary::Summary;
use rulehost_ledger::SyncPoint;

/// Lines per batch handed between stages.
pub const BATCH_LINES_MAX: usize = 512;
/// Batches in flight between two stages (bounds memory: lines × batches).
pub const BATCHES_IN_FLIGHT_MAX: usize = 8;
/// Bytes one input line may have; a longer line is an error record.
pub const LINE_BYTES_MAX: usize = 1 << 20;

/// How a run parallelises.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Threads evaluating rules. By default, the number of CPUs.
    pub threads: usize,
    /// Transactions evaluated ahead of their commit, per thread. By default 4.
    pub window_per_thread: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            window_per_thread: WINDOW_PER_THREAD_DEFAULT,
        }
    }
}

/// Default transactions in flight per evaluating thread.
pub const WINDOW_PER_THREAD_DEFAULT: usize = 32;
/// Most evaluating threads a run or a host may have (`--threads`).
pub const THREADS_MAX: usize = 256;
/// Most transactions evaluated ahead per thread.
pub const WINDOW_PER_THREAD_MAX: usize = 4096;

/// Reports progress (lines done) while a run goes on.
pub trait Progress: Send {
    /// Called after each batch with the lines done so far.
    fn advance(&mut self, lines_done: u64);
}

type Parsed = Result<ParsedTransaction, InputError>;

/// Runs every line of `input` through `pipeline` with `ruleset`, writing one
/// record per line to `output`, in order. Returns the summary, or the first
/// I/O error of reading or writing.
pub fn run_stream(
    pipeline: &Pipeline,
    rules: &dyn RuleSource,
    input: impl BufRead + Send,
    output: impl Write + Send,
    options: &RunOptions,
    mut progress: Option<Box<dyn Progress>>,
) -> io::Result<Summary> {
    let started = Instant::now();
    let threads = options.threads.clamp(1, THREADS_MAX);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("rulehost-eval-{i}"))
        .build()
        .map_err(io::Error::other)?;
    let window = threads * options.window_per_thread.clamp(1, WINDOW_PER_THREAD_MAX);
    let (parsed_tx, parsed_rx) = bounded::<Vec<(u64, Parsed)>>(BATCHES_IN_FLIGHT_MAX);
    let (decided_tx, decided_rx) = bounded::<(Vec<Record>, SyncPoint)>(BATCHES_IN_FLIGHT_MAX);

    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new().name("rulehost-read".into()).spawn_scoped(
            scope,
            move || -> io::Result<()> {
                let mut input = input;
                let mut batch = Vec::with_capacity(BATCH_LINES_MAX);
                let mut buf = Vec::new();
                let mut line_no = 0u64;
                loop {
                    let line = read_line_bounded(&mut input, &mut buf, LINE_BYTES_MAX)?;
                    line_no += 1;
                    let parsed = match line {
                        Line::End => break,
                        Line::Whole => parse_bytes(line_no, &buf),
                        Line::TooLong { bytes } => too_long(line_no, bytes),
                    };
                    batch.push((line_no, parsed));
                    if batch.len() == BATCH_LINES_MAX
                        && parsed_tx.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH_LINES_MAX))).is_err()
                    {
                        return Ok(());
                    }
                }
                if !batch.is_empty() {
                    let _ = parsed_tx.send(batch);
                }
                Ok(())
            },
        )?;

        let writer = std::thread::Builder::new().name("rulehost-write".into()).spawn_scoped(
            scope,
            move || -> io::Result<Summary> {
                let mut output = io::BufWriter::with_capacity(1 << 16, output);
                let mut summary = Summary::default();
                let mut buf = Vec::with_capacity(1 << 16);
                for (batch, durable) in decided_rx {
                    // Acknowledge (write) a decision only once the ledger made it durable.
                    durable.wait().map_err(io::Error::other)?;
                    buf.clear();
                    for record in &batch {
                        summary.add(record);
                        record.write_json(&mut buf);
                    }
                    output.write_all(&buf)?;
                    if let Some(p) = progress.as_mut() {
                        p.advance(summary.lines);
                    }
                }
                output.flush()?;
                Ok(summary)
            },
        )?;

        for batch in parsed_rx {
            // One version per batch: every transaction is evaluated wholly
            // against the rule set it started with, even if a reload swaps
            // in another meanwhile.
            let ruleset = rules.current();
            let records: Vec<Record> = pipeline.decide_many(&ruleset, &batch, &pool, window);
            let durable = crate::pipeline::lock(pipeline.ledger()).sync_point();
            if decided_tx.send((records, durable)).is_err() {
                break;
            }
        }
        drop(decided_tx);
        let read = reader.join().expect("reader thread panicked");
        let mut summary = writer.join().expect("writer thread panicked")?;
        read?;
        summary.elapsed = started.elapsed();
        Ok(summary)
    })
}

fn malformed(line_no: u64, message: String) -> Parsed {
    Err(InputError {
        line: line_no,
        id: None,
        code: rulehost_core::input::ErrorCode::MalformedJson,
        field: None,
        message,
    })
}

/// The error record of a line over `LINE_BYTES_MAX` (only its first bytes
/// were kept; the rest was skipped).
pub(crate) fn too_long(line_no: u64, bytes: u64) -> Parsed {
    Err(too_long_error(line_no, bytes))
}

/// The error of a transaction over `LINE_BYTES_MAX` bytes (a line, or an
/// HTTP body or batch item).
pub fn too_long_error(line_no: u64, bytes: u64) -> InputError {
    InputError {
        line: line_no,
        id: None,
        code: rulehost_core::input::ErrorCode::MalformedJson,
        field: None,
        message: format!("line of {bytes} bytes exceeds the limit of {LINE_BYTES_MAX}; skipped"),
    }
}

/// Parses one line's bytes (at most `LINE_BYTES_MAX` of them).
pub fn parse_bytes(line_no: u64, bytes: &[u8]) -> Result<ParsedTransaction, InputError> {
    if bytes.len() > LINE_BYTES_MAX {
        return too_long(line_no, bytes.len() as u64);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_transaction(line_no, text),
        Err(e) => malformed(line_no, format!("line is not UTF-8: {e}")),
    }
}
