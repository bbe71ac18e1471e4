//! `rulehost serve` through a real HTTP client: the real binary on a
//! loopback port chosen at run time. Every endpoint, the admin token, body
//! and batch limits, malformed JSON, overload, graceful shutdown losing
//! nothing acknowledged, hot reload visible through `/v1/ruleset`, and the
//! OpenAPI document against the real routes.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TempRuleSet, root};

const TOKEN: &str = "s3cret-admin-token";

struct Server {
    child: Child,
    base: String,
    /// The ledger, token and rollout state (kept across a restart).
    dir: Option<tempfile::TempDir>,
    ledger: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/pipeline").join(name)
}

fn start(rules: &Path, extra: &[&str]) -> Server {
    start_in(tempfile::tempdir().unwrap(), rules, extra)
}

impl Server {
    /// Kills the server (no graceful shutdown) and starts it again on the
    /// same ledger and rollout state.
    fn restart(mut self, rules: &Path, extra: &[&str]) -> Server {
        let dir = self.dir.take().unwrap();
        drop(self);
        start_in(dir, rules, extra)
    }
}

fn start_in(dir: tempfile::TempDir, rules: &Path, extra: &[&str]) -> Server {
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rulehost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--rules", rules.to_str().unwrap()])
        .args(["--ledger", ledger.to_str().unwrap(), "--accounts", fixture("accounts.jsonl").to_str().unwrap()])
        .args(["--admin-token-file", token.to_str().unwrap()])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let base = listening(&mut child);
    Server { child, base, dir: Some(dir), ledger }
}

/// The base URL a starting `rulehost serve` prints first.
pub(crate) fn listening(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line: {line:?}")).to_owned()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn without_line(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("line");
    v
}

fn tx(id: &str, source: &str, destination: &str, amount: &str) -> Value {
    json!({"id": id, "timestamp": "2026-01-05T10:00:00Z", "kind": "payment", "source": source,
           "destination": destination, "amount": amount, "currency": "USD"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_like_the_command_line() {
    let set = TempRuleSet::example();
    let server = start(set.dir.path(), &[]);
    let (base, http) = (&server.base, client());

    let (s, body) = send(http.get(format!("{base}/healthz"))).await;
    assert_eq!((s, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, body) = send(http.get(format!("{base}/readyz"))).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // The pipeline fixture, one request per line, answers exactly what
    // `rulehost run` writes (but for the line number): decisions 200, bad
    // input 400, idempotency conflicts 409.
    let expected: Vec<Value> = std::fs::read_to_string(fixture("expected.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let input = std::fs::read_to_string(fixture("transactions.jsonl")).unwrap();
    for (line, want) in input.split('\n').zip(&expected) {
        let (status, got) = send(http.post(format!("{base}/v1/transactions")).body(line.to_owned())).await;
        let code = want["error"]["code"].as_str();
        let want_status = match code {
            None => StatusCode::OK,
            Some("IDEMPOTENCY_CONFLICT") => StatusCode::CONFLICT,
            Some(_) => StatusCode::BAD_REQUEST,
        };
        assert_eq!(status, want_status, "{line}");
        assert_eq!(without_line(got), without_line(want.clone()), "{line}");
    }

    // The recorded decision, and unknown ids.
    let (s, got) = send(http.get(format!("{base}/v1/transactions/t16-hold"))).await;
    assert_eq!(s, StatusCode::OK);
    let want = expected.iter().find(|e| e["id"] == "t16-hold" && e.get("replayed").is_none()).unwrap();
    assert_eq!(without_line(want.clone()), got);
    let (s, got) = send(http.get(format!("{base}/v1/transactions/nope"))).await;
    assert_eq!((s, got["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")));

    // Balances.
    let (s, holdy) = send(http.get(format!("{base}/v1/accounts/holdy"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((holdy["posted"].as_str(), holdy["pending"].as_str()), (Some("7000.00"), Some("7000.00")));
    let (s, _) = send(http.get(format!("{base}/v1/accounts/nope"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Malformed bodies name what is wrong.
    let (s, e) = send(http.post(format!("{base}/v1/transactions")).body("{not json")).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("MALFORMED_JSON")));
    let float = r#"{"id":"f1","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a1","destination":"a2","amount":12.5,"currency":"USD"}"#;
    let (s, e) = send(http.post(format!("{base}/v1/transactions")).body(float)).await;
    assert_eq!(
        (s, e["error"]["code"].as_str(), e["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_FIELD"), Some("amount"))
    );
    let (s, e) = send(http.post(format!("{base}/v1/transactions:batch")).body("{\"not\":\"an array\"}")).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("MALFORMED_JSON")));

    // A batch is answered in order, one record per item.
    let batch = json!([tx("b1", "a1", "a2", "1.00"), 5, tx("b2", "a2", "a1", "2.00"), tx("b1", "a1", "a2", "1.00")]);
    let (s, records) = send(http.post(format!("{base}/v1/transactions:batch")).json(&batch)).await;
    assert_eq!(s, StatusCode::OK);
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!((records[0]["id"].as_str(), records[0]["outcome"].as_str()), (Some("b1"), Some("approve")));
    assert_eq!((records[1]["line"].as_u64(), records[1]["outcome"].as_str()), (Some(2), Some("error")));
    assert_eq!(records[2]["id"], "b2");
    assert_eq!(records[3]["replayed"], true);

    // Reviews need the token; with it they post or void, idempotently.
    let approve = format!("{base}/v1/reviews/t16-hold/approve");
    let (s, e) = send(http.post(&approve)).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED")));
    let (s, _) = send(http.post(&approve).bearer_auth("wrong-token-of-same-len")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, hold) = send(http.post(&approve).bearer_auth(TOKEN)).await;
    assert_eq!((s, hold["state"].as_str(), hold["result"].as_str()), (StatusCode::OK, Some("posted"), Some("done")));
    let (_, hold) = send(http.post(&approve).bearer_auth(TOKEN)).await;
    assert_eq!(hold["result"], "already-done");
    let (s, e) = send(http.post(format!("{base}/v1/reviews/t16-hold/decline")).bearer_auth(TOKEN)).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("HOLD_RESOLVED")));
    let (s, e) = send(http.post(format!("{base}/v1/reviews/nope/decline")).bearer_auth(TOKEN)).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("UNKNOWN_HOLD")));
    let (_, holdy) = send(http.get(format!("{base}/v1/accounts/holdy"))).await;
    assert_eq!(holdy["pending"], "0.00");

    // The rule set, and reload/rollback behind the token.
    let (s, rs) = send(http.get(format!("{base}/v1/ruleset"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rs["rules"].as_array().unwrap().len(), 9);
    assert!(rs["last_error"].is_null());
    for action in ["reload", "rollback"] {
        let (s, _) = send(http.post(format!("{base}/v1/ruleset/{action}"))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{action} without the token");
    }
    let (s, r) = send(http.post(format!("{base}/v1/ruleset/reload")).bearer_auth(TOKEN)).await;
    assert_eq!((s, r["result"].as_str()), (StatusCode::OK, Some("unchanged")));
    let (s, r) = send(http.post(format!("{base}/v1/ruleset/rollback")).bearer_auth(TOKEN)).await;
    assert_eq!((s, r["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("ROLLBACK_REFUSED")));

    // Metrics.
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        "rulehost_decisions_total{outcome=\"approve\"}",
        "rulehost_decisions_total{outcome=\"error\"}",
        "rulehost_replays_total",
        "rulehost_rule_call_duration_seconds_bucket{le=",
        "rulehost_rule_fuel_total{rule=\"velocity\"}",
        "rulehost_ledger_commit_duration_seconds_count",
        "rulehost_reloads_total",
        "rulehost_reload_failures_total",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from:\n{metrics}");
    }
    let (s, e) = send(http.get(format!("{base}/v1/nothing-here"))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_413_and_overload_503_instead_of_queueing() {
    let set = TempRuleSet::example();
    let server = start(
        set.dir.path(),
        &["--body-bytes-max", "65536", "--batch-max", "300", "--in-flight-max", "2", "--threads", "1"],
    );
    let (base, http) = (&server.base, client());
    let big = format!("{{\"id\":\"{}\"}}", "x".repeat(70_000));
    let (s, e) = send(http.post(format!("{base}/v1/transactions")).body(big)).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("BODY_TOO_LARGE")));
    let many: Vec<Value> = (0..301).map(|i| tx(&format!("m{i}"), "a1", "a2", "0.01")).collect();
    let (s, e) = send(http.post(format!("{base}/v1/transactions:batch")).json(&many)).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("BATCH_TOO_LARGE")));

    // Twelve concurrent batches of 300 on one evaluating thread, with two in
    // flight allowed: the rest are refused at once, never queued.
    let tasks: Vec<_> = (0..12)
        .map(|b| {
            let (http, url) = (http.clone(), format!("{base}/v1/transactions:batch"));
            let batch: Vec<Value> = (0..300).map(|i| tx(&format!("c{b}-{i}"), "a1", "a2", "0.01")).collect();
            tokio::spawn(async move {
                let r = http.post(url).json(&batch).send().await.unwrap();
                (r.status(), r.headers().get("retry-after").is_some(), r.text().await.unwrap())
            })
        })
        .collect();
    let mut answered = HashMap::new();
    for t in tasks {
        let (status, retry_after, body) = t.await.unwrap();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(retry_after, "503 carries Retry-After");
            assert!(body.contains("OVERLOADED"), "{body}");
        } else {
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        *answered.entry(status).or_insert(0) += 1;
    }
    assert!(answered.get(&StatusCode::SERVICE_UNAVAILABLE).copied().unwrap_or(0) > 0, "{answered:?}");
    assert!(answered.get(&StatusCode::OK).copied().unwrap_or(0) > 0, "{answered:?}");
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("rulehost_requests_refused_total{reason=\"overloaded\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_out_of_time_gets_503_and_its_retry_the_decision() {
    let set = TempRuleSet::example();
    let server = start(set.dir.path(), &["--request-timeout-ms", "250", "--threads", "1"]);
    let (base, http) = (&server.base, client());
    let batch: Vec<Value> = (0..4000).map(|i| tx(&format!("slow-{i}"), "a1", "a2", "0.01")).collect();
    let (s, e) = send(http.post(format!("{base}/v1/transactions:batch")).json(&batch)).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("TIMEOUT")));
    // The work went on; once it is done, a retry of any of its transactions
    // answers the decision that was made, not a second one.
    let mut decided = false;
    for _ in 0..600 {
        if send(http.get(format!("{base}/v1/transactions/slow-3999"))).await.0 == StatusCode::OK {
            decided = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(decided, "the timed-out batch was still decided");
    let (s, again) = send(http.post(format!("{base}/v1/transactions")).json(&batch[0])).await;
    assert_eq!((s, again["id"].as_str(), again["replayed"].as_bool()), (StatusCode::OK, Some("slow-0"), Some(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_loses_nothing_acknowledged() {
    let set = TempRuleSet::example();
    let mut server = start(set.dir.path(), &[]);
    let (base, http) = (server.base.clone(), client());
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    // Keep sending after SIGTERM too, to meet the closing server.
                    let body = tx(&format!("g{c}-{i}"), "a1", "a2", "0.01");
                    match http.post(format!("{base}/v1/transactions")).json(&body).send().await {
                        Ok(r) if r.status() == StatusCode::OK => {
                            let v: Value = r.json().await.unwrap();
                            acked.push(without_line(v));
                        }
                        Ok(r) => panic!("unexpected {}", r.status()),
                        Err(_) => break, // the server stopped accepting
                    }
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        (status, server)
    })
    .await
    .unwrap();
    let (status, server) = status;
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.unwrap());
    }
    assert!(acked.len() > 20, "requests were answered before SIGTERM ({})", acked.len());
    let reader = rulehost::ledger::StoreReader::open(&server.ledger).unwrap();
    for decision in &acked {
        let id = decision["id"].as_str().unwrap();
        let stored = reader.record(id).unwrap().unwrap_or_else(|| panic!("acknowledged {id} is not in the ledger"));
        assert_eq!(&serde_json::from_str::<Value>(stored.decision.json()).unwrap(), decision);
    }
    drop(reader);
    let reconcile = Command::new(env!("CARGO_BIN_EXE_rulehost"))
        .args(["ledger", "reconcile", "--ledger", server.ledger.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(reconcile.status.success(), "{}", String::from_utf8_lossy(&reconcile.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_and_refusals_show_in_the_ruleset_endpoint() {
    let set = TempRuleSet::example();
    let server = start(set.dir.path(), &[]);
    let (base, http) = (&server.base, client());
    let ruleset = || async { send(http.get(format!("{base}/v1/ruleset"))).await.1 };
    let first = ruleset().await;
    let v1 = first["version"].as_str().unwrap().to_owned();
    let manifest = set.dir.path().join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("review_at"), "the example manifest sets review_at");
    let bumped = bump_review_at(&text);
    std::fs::write(&manifest, &bumped).unwrap();
    let mut swapped = Value::Null;
    for _ in 0..200 {
        let now = ruleset().await;
        if now["version"] != v1 {
            swapped = now;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(swapped["version"].is_string(), "the change went live");
    assert_eq!(swapped["reloads"], 1);
    let v2 = swapped["version"].as_str().unwrap().to_owned();
    let (_, d) = send(http.post(format!("{base}/v1/transactions")).json(&tx("r1", "a1", "a2", "1.00"))).await;
    assert_eq!(d["ruleset"], v2.as_str(), "decisions name the new version");

    // A truncated module is refused; the version stays; the error shows.
    let module = set.dir.path().join("modules/velocity.wasm");
    let bytes = std::fs::read(&module).unwrap();
    std::fs::write(&module, &bytes[..bytes.len() / 2]).unwrap();
    let mut refused = Value::Null;
    for _ in 0..200 {
        let now = ruleset().await;
        if !now["last_error"].is_null() {
            refused = now;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused["version"], v2.as_str(), "the live version keeps serving");
    assert!(refused["last_error"]["message"].as_str().unwrap().contains("velocity"), "{refused}");
    std::fs::write(&module, &bytes).unwrap();

    // Rollback through the API serves the first version again.
    let (s, r) = send(http.post(format!("{base}/v1/ruleset/rollback")).bearer_auth(TOKEN)).await;
    assert_eq!((s, r["result"].as_str(), r["to"].as_str()), (StatusCode::OK, Some("swapped"), Some(v1.as_str())));
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("rulehost_reloads_total 1"), "{metrics}");
    assert!(metrics.contains("rulehost_rollbacks_total 1"), "{metrics}");
    assert!(!metrics.contains("rulehost_reload_failures_total 0"), "the refusal was counted: {metrics}");
}

/// The manifest with `review_at` one higher.
fn bump_review_at(text: &str) -> String {
    text.lines()
        .map(|l| match l.trim_start().strip_prefix("review_at = ") {
            Some(v) => format!("review_at = {}", v.trim().parse::<u64>().unwrap() + 1),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_real_routes() {
    let doc: Value = serde_json::from_str(rulehost::server::OPENAPI).unwrap();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    // Every route the router declares is documented, and nothing more.
    let source = std::fs::read_to_string(root().join("host/server/src/server/mod.rs")).unwrap();
    let declared: BTreeSet<String> =
        source.split(".route(\"").skip(1).map(|rest| rest.split('"').next().unwrap().to_owned()).collect();
    assert_eq!(declared, documented, "routes in server.rs vs paths in openapi.json");

    // Every documented operation exists on the running server (no fallback
    // 404 and no 405), and answers one of its documented statuses.
    let set = TempRuleSet::example();
    let server = start(set.dir.path(), &[]);
    let http = client();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let url = format!("{}{}", server.base, path.replace("{id}", "t16-hold"));
            let req = match method.as_str() {
                "get" => http.get(&url),
                "post" => http.post(&url).bearer_auth(TOKEN).body("[]"),
                "put" => http.put(&url).bearer_auth(TOKEN).body("[]"),
                other => panic!("method {other}"),
            };
            let r = req.send().await.unwrap();
            let status = r.status();
            let body = r.text().await.unwrap();
            assert!(
                !body.contains("no such route") && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {status} {body}"
            );
            let documented: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            assert!(
                documented.iter().any(|c| *c == status.as_str()),
                "{method} {path} answered {status}, documented {documented:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_transaction_and_rule_spans() {
    let set = TempRuleSet::example();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rulehost"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--ledger", ":memory:"])
        .args(["--rules", set.dir.path().to_str().unwrap()])
        .args(["--accounts", fixture("accounts.jsonl").to_str().unwrap()])
        .env("RUST_LOG", "rulehost=debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("listening on ").unwrap().to_owned();
    let (s, _) = send(client().post(format!("{base}/v1/transactions")).json(&tx("j1", "a1", "a2", "1.00"))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let closed =
        |name: &str| events.iter().filter(|e| e["span"]["name"] == name && e["fields"]["message"] == "close").count();
    assert_eq!(closed("transaction"), 1, "{text}");
    assert_eq!(closed("rule"), 9, "one span per rule call: {text}");
    assert!(events.iter().any(|e| e["span"]["id"] == "j1"), "the transaction span names its id: {text}");
}

/// Writes `request` on a raw connection and reads until the server closes
/// it or `wait` passes; returns what it answered.
async fn raw(base: &str, request: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answer_is_json_and_slow_or_short_requests_end() {
    let set = TempRuleSet::example();
    let server = start(set.dir.path(), &["--request-timeout-ms", "1000", "--header-read-timeout-ms", "300"]);
    let (base, http) = (&server.base, client());
    let json_error = |(s, e): (StatusCode, Value), status: StatusCode, code: &str| {
        assert_eq!(s, status, "{e}");
        assert_eq!(e["error"]["code"], code, "{e}");
        assert!(e["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    };
    json_error(
        send(http.get(format!("{base}/v1/transactions"))).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
    json_error(send(http.get(format!("{base}/v1/accounts/%FF"))).await, StatusCode::BAD_REQUEST, "INVALID_PATH");
    let long = "a".repeat(20_000);
    json_error(send(http.get(format!("{base}/v1/accounts/{long}"))).await, StatusCode::URI_TOO_LONG, "URI_TOO_LONG");

    // A body shorter than its Content-Length never arrived: 408, not "may
    // still be decided".
    let started = std::time::Instant::now();
    let answer = raw(
        base,
        b"POST /v1/transactions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"id\":",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("BODY_TIMEOUT"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4));

    // Headers that never finish: the connection is closed after the
    // header-read timeout, not held open.
    let started = std::time::Instant::now();
    let answer = raw(base, b"GET /healthz HTTP/1.1\r\nhost: x\r\n", Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "held open for {:?}: {answer}", started.elapsed());

    // A duplicate key in a body is an INVALID_FIELD naming the key.
    let body = r#"{"id":"dup","timestamp":"2026-01-05T10:00:00Z","kind":"payment","source":"a1","destination":"a2","amount":"1.00","amount":"2.00","currency":"USD"}"#;
    let (s, e) = send(http.post(format!("{base}/v1/transactions")).body(body)).await;
    assert_eq!(
        (s, e["error"]["code"].as_str(), e["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_FIELD"), Some("amount"))
    );
    // The server still serves.
    assert_eq!(send(http.get(format!("{base}/healthz"))).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_candidate_reports_its_agreement_over_http() {
    let set = TempRuleSet::example();
    let manifest = std::fs::read_to_string(set.dir.path().join("manifest.toml")).unwrap();
    let candidate = TempRuleSet::new(&manifest.replace("review_at = 400", "review_at = 0"));
    let server = start(set.dir.path(), &["--shadow", candidate.dir.path().to_str().unwrap()]);
    let (base, http) = (&server.base, client());
    for i in 0..5 {
        let (s, d) =
            send(http.post(format!("{base}/v1/transactions")).json(&tx(&format!("sh{i}"), "a1", "a2", "1.00"))).await;
        assert_eq!((s, d["outcome"].as_str()), (StatusCode::OK, Some("approve")), "{d}");
    }
    let (s, report) = send(http.get(format!("{base}/v1/shadow"))).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["decided"], 5, "{report}");
    // review_at 0: every approval would have been a review.
    let t = &report["transitions"][0];
    assert_eq!((t["from"].as_str(), t["to"].as_str(), t["count"].as_u64()), (Some("approve"), Some("review"), Some(5)));
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("rulehost_shadow_decisions_total{live=\"approve\",candidate=\"review\"} 5"), "{metrics}");
    // The same report from the command line, as JSON and as a page.
    let page = server.dir.as_ref().unwrap().path().join("shadow.html");
    let out = Command::new(env!("CARGO_BIN_EXE_rulehost"))
        .args(["shadow", "report", "--json", "--server", base, "--html", page.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), report);
    assert!(std::fs::read_to_string(&page).unwrap().contains("approve → review"));
    drop(server);
    let plain = start(set.dir.path(), &[]);
    let (s, e) = send(client().get(format!("{}/v1/shadow", plain.base))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NO_SHADOW")));
}

/// Posts one transaction from each of `sources`; returns the decisions.
async fn decide(http: &reqwest::Client, base: &str, round: &str, sources: &[&str]) -> Vec<Value> {
    let mut seen = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let destination = if *source == "a1" { "a2" } else { "a1" };
        let body = tx(&format!("c-{round}-{i}"), source, destination, "1.00");
        let (s, d) = send(http.post(format!("{base}/v1/transactions")).json(&body)).await;
        assert_eq!(s, StatusCode::OK, "{d}");
        seen.push(d);
    }
    seen
}

/// `rulehost rollout …` against the server; returns (exit code, stdout).
fn rollout_cli(server: &Server, args: &[&str], with_token: bool) -> (i32, Value) {
    let token = server.dir.as_ref().unwrap().path().join("token");
    let mut command = Command::new(env!("CARGO_BIN_EXE_rulehost"));
    command.args(["rollout", "--server", &server.base]).args(args).env_remove("RULEHOST_ADMIN_TOKEN");
    if with_token {
        command.args(["--admin-token-file", token.to_str().unwrap()]);
    }
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), serde_json::from_str(&stdout).unwrap_or(Value::String(stdout.into_owned())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_set_promoted_rolled_back_and_aborted_through_the_api_and_cli_and_survives_restarts() {
    let live = TempRuleSet::example();
    let manifest = std::fs::read_to_string(live.dir.path().join("manifest.toml")).unwrap();
    let candidate = TempRuleSet::new(&manifest.replace("review_at = 400", "review_at = 300"));
    let (live_version, candidate_version) = (live.load().version, candidate.load().version);
    let args = ["--canary", candidate.dir.path().to_str().unwrap()];
    let server = start(live.dir.path(), &args);
    let http = client();
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth(TOKEN);

    let (s, r) = send(http.get(format!("{}/v1/rollout", server.base))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!((r["phase"].as_str(), r["share"].as_u64()), (Some("canary"), Some(0)), "{r}");
    assert_eq!(r["candidate"]["version"].as_str(), Some(&*candidate_version));

    // The share through the CLI (the token is required).
    let (code, _) = rollout_cli(&server, &["share", "20"], false);
    assert_ne!(code, 0, "no token, no change");
    let (code, answer) = rollout_cli(&server, &["share", "20"], true);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["transition"]["event"], "share");
    let (s, e) =
        send(admin(http.put(format!("{}/v1/rollout/share", server.base))).json(&json!({"percent": 101}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_SHARE")));

    // Each source meets the arm its bucket gives it, and says so.
    let sources = ["a1", "a2", "holdy", "a4", "a5"];
    for d in decide(&http, &server.base, "one", &sources).await {
        let source = &sources[d["id"].as_str().unwrap().rsplit('-').next().unwrap().parse::<usize>().unwrap()];
        let candidate_decides = rulehost::rollout::bucket(source) < 20;
        assert_eq!(d["rollout"]["arm"] == "candidate", candidate_decides, "{d}");
        let want = if candidate_decides { &candidate_version } else { &live_version };
        assert_eq!(d["ruleset"].as_str(), Some(&**want), "{d}");
        assert_eq!(d["rollout"]["share"], 20, "{d}");
    }

    // A restart (kill -9) resumes at 20%.
    let server = server.restart(live.dir.path(), &args);
    let (_, r) = send(http.get(format!("{}/v1/rollout", server.base))).await;
    assert_eq!((r["phase"].as_str(), r["share"].as_u64()), (Some("canary"), Some(20)), "{r}");
    let events: Vec<&str> = r["transitions"].as_array().unwrap().iter().map(|t| t["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["start", "share"]);

    // Promotion through the API: the candidate is live, untagged.
    let (s, p) = send(admin(http.post(format!("{}/v1/rollout/promote", server.base)))).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["rollout"]["phase"], "promoted");
    let (_, rs) = send(http.get(format!("{}/v1/ruleset", server.base))).await;
    assert_eq!(rs["version"].as_str(), Some(&*candidate_version), "{rs}");
    for d in decide(&http, &server.base, "two", &sources).await {
        assert_eq!(d["ruleset"].as_str(), Some(&*candidate_version), "{d}");
        assert!(d.get("rollout").is_none(), "{d}");
    }
    let metrics = http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("rulehost_rollout_transitions_total{event=\"promote\"} 1"), "{metrics}");
    let (s, e) = send(admin(http.post(format!("{}/v1/rollout/promote", server.base)))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("ROLLOUT_CONFLICT")));

    // The promotion survives a restart with the same command line.
    let server = server.restart(live.dir.path(), &args);
    let (_, rs) = send(http.get(format!("{}/v1/ruleset", server.base))).await;
    assert_eq!(rs["version"].as_str(), Some(&*candidate_version), "{rs}");

    // Rollback through the CLI: the old live serves, the demoted one is the
    // candidate at 0%; then abort through the API.
    let (code, answer) = rollout_cli(&server, &["rollback"], true);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(
        (answer["rollout"]["phase"].as_str(), answer["rollout"]["share"].as_u64()),
        (Some("rolled-back"), Some(0))
    );
    let (_, rs) = send(http.get(format!("{}/v1/ruleset", server.base))).await;
    assert_eq!(rs["version"].as_str(), Some(&*live_version), "{rs}");
    let (code, _) = rollout_cli(&server, &["share", "50"], true);
    assert_eq!(code, 0);
    let (s, a) = send(admin(http.post(format!("{}/v1/rollout/abort", server.base)))).await;
    assert_eq!(
        (s, a["rollout"]["phase"].as_str(), a["rollout"]["share"].as_u64()),
        (StatusCode::OK, Some("aborted"), Some(0))
    );
    let server = server.restart(live.dir.path(), &args);
    let (code, status) = rollout_cli(&server, &["status"], false);
    assert_eq!(code, 0, "{status}");
    assert_eq!((status["phase"].as_str(), status["share"].as_u64()), (Some("aborted"), Some(0)), "{status}");
    assert_eq!(status["candidate"]["version"].as_str(), Some(&*candidate_version));
    let events: Vec<&str> =
        status["transitions"].as_array().unwrap().iter().map(|t| t["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["start", "share", "promote", "rollback", "share", "abort"]);

    // A host without a rollout says so.
    let plain = start(live.dir.path(), &[]);
    let (s, e) = send(http.get(format!("{}/v1/rollout", plain.base))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NO_ROLLOUT")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_aborts_a_failing_canary_and_the_abort_survives_a_restart() {
    let live = TempRuleSet::example();
    let manifest = std::fs::read_to_string(live.dir.path().join("manifest.toml")).unwrap();
    let failing = TempRuleSet::new(&format!(
        "{manifest}\n[[rule]]\nname = \"hostile\"\nkind = \"risk\"\nmodule = \"modules/hostile.wasm\"\non_error = \"review\"\n[rule.params]\nmode = \"trap\"\n"
    ));
    let args = [
        "--canary",
        failing.dir.path().to_str().unwrap(),
        "--canary-share",
        "100",
        "--abort-failure-percent",
        "10",
        "--guard-window",
        "10",
        "--guard-min-decisions",
        "5",
    ];
    let server = start(live.dir.path(), &args);
    let http = client();
    let mut arms = Vec::new();
    for i in 0..8 {
        let (s, d) =
            send(http.post(format!("{}/v1/transactions", server.base)).json(&tx(&format!("g{i}"), "a1", "a2", "1.00")))
                .await;
        assert_eq!(s, StatusCode::OK, "{d}");
        arms.push(d["rollout"]["arm"].as_str().unwrap().to_owned());
    }
    // Five failing decisions fill the guard's minimum; then the live one decides.
    assert_eq!(arms, ["candidate", "candidate", "candidate", "candidate", "candidate", "live", "live", "live"]);
    let (_, r) = send(http.get(format!("{}/v1/rollout", server.base))).await;
    assert_eq!((r["phase"].as_str(), r["share"].as_u64()), (Some("aborted"), Some(0)), "{r}");
    let last = r["transitions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"], "auto-abort", "{r}");
    assert!(last["why"].as_str().unwrap().contains("rule-failure rate 5/5"), "{last}");
    let metrics = http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("rulehost_rollout_transitions_total{event=\"auto-abort\"} 1"), "{metrics}");
    assert!(metrics.contains("rulehost_rollout_decisions_total{arm=\"candidate\"} 5"), "{metrics}");

    let server = server.restart(live.dir.path(), &args);
    let (_, r) = send(http.get(format!("{}/v1/rollout", server.base))).await;
    assert_eq!((r["phase"].as_str(), r["share"].as_u64()), (Some("aborted"), Some(0)), "{r}");
    let (s, d) = send(http.post(format!("{}/v1/transactions", server.base)).json(&tx("g9", "a1", "a2", "1.00"))).await;
    assert_eq!((s, d["rollout"]["arm"].as_str()), (StatusCode::OK, Some("live")), "{d}");
}
