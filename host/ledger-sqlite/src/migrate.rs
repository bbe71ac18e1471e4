//! Schema migrations, each one SQLite transaction: a ledger migrates whole
//! or not at all.
//!
//! Schema 1 (the first release) kept each decision's JSON, its fingerprint
//! and its history columns in `decisions`. Schema 2 keeps compact records
//! ([`rulehost_ledger::record`]) and history in a table of its own. A decision
//! migrated from schema 1 keeps its fingerprint and JSON (format 0): its
//! replay answers and conflicts exactly as before, but it cannot be
//! re-evaluated (schema 1 kept no input). Schema 3 adds the partial index
//! of pending holds (what opening counts, now that holds are not loaded)
//! and keeps the id filter's snapshot in parts (its blob is split).

use rusqlite::{Connection, params};

use super::rows::LoadError;
use super::schema::{SCHEMA_2, SCHEMA_VERSION, schema_3, ts_key};
use rulehost_core::input::parse_timestamp;
use rulehost_ledger::record::RECORD_FORMAT_MIGRATED;

/// Brings a ledger of schema `from` (1 or 2) to [`SCHEMA_VERSION`], in one
/// transaction.
pub(super) fn run(conn: &Connection, from: i64) -> Result<(), LoadError> {
    let started = std::time::Instant::now();
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match migrate(conn, from) {
        Ok(decisions) => {
            conn.execute_batch("COMMIT")?;
            tracing::info!(
                decisions,
                seconds = started.elapsed().as_secs_f64(),
                "migrated the ledger from schema {from} to {SCHEMA_VERSION}"
            );
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// The steps from `from`; returns how many decisions were rewritten.
fn migrate(conn: &Connection, from: i64) -> Result<u64, LoadError> {
    let mut count = 0;
    if from <= 1 {
        conn.execute_batch("ALTER TABLE decisions RENAME TO decisions_1;")?;
        conn.execute_batch(SCHEMA_2)?;
        count = copy_decisions(conn)?;
        conn.execute_batch("DROP TABLE decisions_1;")?;
    }
    if from <= 2 {
        conn.execute_batch(&schema_3())?;
    }
    conn.execute_batch(&format!(
        "UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version';
         PRAGMA user_version = {SCHEMA_VERSION};"
    ))?;
    Ok(count)
}

fn copy_decisions(conn: &Connection) -> Result<u64, LoadError> {
    let mut read = conn.prepare(
        "SELECT seq, id, fingerprint, history_source, history_ts, history_amount, record FROM decisions_1 ORDER BY seq",
    )?;
    let mut insert = conn.prepare("INSERT INTO decisions (seq, id, record) VALUES (?1, ?2, ?3)")?;
    let mut history = conn.prepare("INSERT INTO history (source, ts, seq, amount) VALUES (?1, ?2, ?3, ?4)")?;
    let mut rows = read.query([])?;
    let mut count = 0u64;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let id: String = r.get(1)?;
        let fingerprint: Vec<u8> = r.get(2)?;
        if fingerprint.len() != 32 {
            return Err(LoadError::Bad(format!("decision {id:?}: fingerprint is not 32 bytes")));
        }
        let json: String = r.get(6)?;
        rulehost_core::decision::Decision::from_json(&json)
            .map_err(|e| LoadError::Bad(format!("decision {id:?}: {e}")))?;
        let mut record = Vec::with_capacity(33 + json.len());
        record.push(RECORD_FORMAT_MIGRATED);
        record.extend_from_slice(&fingerprint);
        record.extend_from_slice(json.as_bytes());
        insert.execute(params![seq, id, record])?;
        let source: Option<String> = r.get(3)?;
        let ts: Option<String> = r.get(4)?;
        let amount: Option<String> = r.get(5)?;
        match (source, ts, amount) {
            (Some(source), Some(ts), Some(amount)) => {
                let t = parse_timestamp(&ts)
                    .map_err(|e| LoadError::Bad(format!("decision {id:?} history timestamp: {e}")))?;
                history.execute(params![source, &ts_key(t)[..], seq, amount])?;
            }
            (None, None, None) => {}
            _ => return Err(LoadError::Bad(format!("decision {id:?}: partial history columns"))),
        }
        count += 1;
    }
    Ok(count)
}
