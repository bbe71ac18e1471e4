//! A payments service that embeds rulehost as a library — its own axum app
//! with its own API, not `rulehost serve`. Every payment goes through the
//! rule set and, when approved, is posted to rulehost's durable ledger before
//! the service answers.
//!
//! Run it (after `scripts/build-rules.sh`, with sample accounts from
//! `rulehost gen --out out/sample`):
//!
//! ```text
//! cargo run -p embedded-service -- examples/ruleset out/sample/accounts.jsonl 127.0.0.1:3000
//! curl -s localhost:3000/pay -d '{"from":"acc-000001","to":"acc-000002","amount":"12.50","currency":"USD"}'
//! curl -s localhost:3000/balance/acc-000001
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use rulehost::decision::Record;
use rulehost::service::{Host, HostBuilder};
use serde::Deserialize;
use serde_json::{Value, json};

/// The service's own request shape (amounts are strings: exact decimals).
#[derive(Deserialize)]
struct Payment {
    from: String,
    to: String,
    amount: String,
    currency: String,
}

#[derive(Clone)]
struct App {
    host: Host,
    next_id: Arc<AtomicU64>,
}

async fn pay(State(app): State<App>, Json(p): Json<Payment>) -> (StatusCode, Json<Value>) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let id = format!("svc-{now}-{}", app.next_id.fetch_add(1, Ordering::Relaxed));
    // The service builds rulehost's transaction JSON (the same shape as its input files).
    let tx = json!({
        "id": id, "timestamp": rulehost::input::format_timestamp(now as i128), "kind": "payment",
        "source": p.from, "destination": p.to, "amount": p.amount, "currency": p.currency,
    });
    match app.host.evaluate(&tx.to_string()).await {
        Ok(Record::Decision { decision, .. }) => (
            StatusCode::OK,
            Json(json!({ "payment": id, "status": decision.outcome.as_str(), "reasons": decision.reasons })),
        ),
        Ok(Record::Error(e)) => (StatusCode::BAD_REQUEST, Json(json!({ "error": e.message, "field": e.field }))),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": e.to_string() }))),
    }
}

async fn balance(State(app): State<App>, Path(account): Path<String>) -> (StatusCode, Json<Value>) {
    match app.host.account(&account) {
        Some(a) => (StatusCode::OK, Json(json!({ "account": a.id, "available": a.available, "currency": a.currency }))),
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": format!("no account {account}") }))),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rules = args.next().unwrap_or_else(|| "examples/ruleset".into());
    let accounts = args.next().unwrap_or_else(|| "out/sample/accounts.jsonl".into());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let host = HostBuilder::new(rules).ledger_file("embedded-service-ledger.sqlite").accounts(accounts).build().await?;
    let app = App { host: host.clone(), next_id: Arc::new(AtomicU64::new(1)) };
    let router = Router::new().route("/pay", post(pay)).route("/balance/{account}", get(balance)).with_state(app);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("payments service on http://{}, rule set {}", listener.local_addr()?, host.version());
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    host.flush().await?;
    Ok(())
}
