//! `rulehost serve`: the host over HTTP/JSON (axum), with the same JSON
//! shapes as the command line. The API is described in `host/server/openapi.json`
//! (served at `/openapi.json`); a test checks it against these routes.
//!
//! Limits, each a named constant and a `serve` option: request body size,
//! transactions per batch, request time, and requests in flight. A request
//! beyond the in-flight limit is answered `503 OVERLOADED` at once (with
//! `Retry-After`), never queued without bound; one that runs out of time gets
//! `503 TIMEOUT` (the transaction may still be decided: retrying with the
//! same id returns that decision). Errors are JSON:
//! `{"error":{"code":"…","field":…,"message":"…"}}` — for a bad transaction,
//! the error record of the command line, which has the same `error` object.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

mod rollout;

use rollout::{rollout, rollout_abort, rollout_promote, rollout_rollback, rollout_share, shadow};

use crate::service::{Host, HostError};
use rulehost_core::decision::Record;
use rulehost_core::input::ErrorCode;
use rulehost_engine::reload::ReloadOutcome;
use rulehost_ledger::LedgerError;

/// Largest request body, in bytes.
pub const BODY_BYTES_MAX_DEFAULT: usize = 8 << 20;
/// Most transactions in one batch request.
pub const BATCH_TRANSACTIONS_MAX_DEFAULT: usize = 10_000;
/// Longest a request may take, in milliseconds.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Most requests in flight; more are refused with 503.
pub const IN_FLIGHT_MAX_DEFAULT: usize = 1_024;
/// `Retry-After` of an overloaded answer, in seconds.
pub const RETRY_AFTER_SECONDS: u32 = 1;
/// Default longest a client may take to send a request's headers, in
/// milliseconds; then the connection is closed.
pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Longest request target (path and query), in bytes; longer ones are
/// answered `414 URI_TOO_LONG`. (Targets beyond hyper's own read buffer,
/// about 400 KB, are refused by hyper itself, with an empty 414/431.)
pub const URI_BYTES_MAX: usize = 8 << 10;
/// Longest the server reads (and drops) the rest of a refused request's
/// body, in milliseconds, so the client reads the answer.
pub const DRAIN_MS: u64 = 1_000;
/// At most this many times the body limit is read (and dropped) of a
/// refused request's body.
pub const DRAIN_BODY_LIMITS: usize = 4;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// How the server behaves.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The bearer token the admin endpoints require (none: they always answer 401).
    pub admin_token: Option<String>,
    /// Largest request body, in bytes.
    pub body_bytes_max: usize,
    /// Most transactions in one batch.
    pub batch_transactions_max: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// Most requests in flight.
    pub in_flight_max: usize,
    /// Longest a client may take to send a request's headers.
    pub header_read_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            admin_token: None,
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            batch_transactions_max: BATCH_TRANSACTIONS_MAX_DEFAULT,
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT),
            in_flight_max: IN_FLIGHT_MAX_DEFAULT,
            header_read_timeout: Duration::from_millis(HEADER_READ_TIMEOUT_MS_DEFAULT),
        }
    }
}

#[derive(Clone)]
struct AppState {
    host: Host,
    config: Arc<ServeConfig>,
    in_flight: Arc<Semaphore>,
}

/// A JSON error answer.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, field: None, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "field": self.field, "message": self.message } });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Stopped => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SHUTTING_DOWN", e.to_string()),
            HostError::Ledger(LedgerError::UnknownHold(id)) => {
                ApiError::new(StatusCode::NOT_FOUND, "UNKNOWN_HOLD", format!("no hold for transaction {id:?}"))
            }
            HostError::Ledger(e @ LedgerError::HoldResolved { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "HOLD_RESOLVED", e.to_string())
            }
            HostError::Ledger(e @ LedgerError::InsufficientFunds(_)) => {
                ApiError::new(StatusCode::CONFLICT, "INSUFFICIENT_FUNDS", e.to_string())
            }
            HostError::Ledger(e @ LedgerError::BalanceOverflow(_)) => {
                ApiError::new(StatusCode::CONFLICT, "BALANCE_OVERFLOW", e.to_string())
            }
            HostError::Ledger(e @ LedgerError::NotOwner { .. }) => {
                ApiError::new(StatusCode::MISDIRECTED_REQUEST, "PARTITION_NOT_OWNED", e.to_string())
            }
            HostError::Ledger(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "LEDGER_UNAVAILABLE", e.to_string()),
            HostError::Internal(message) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", format!("internal error: {message}"))
            }
        }
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// A record as an HTTP answer: decisions 200, bad input 400, an id decided
/// with other content 409, a source another host owns 421 (the message
/// names the owner), a ledger that cannot commit 503.
fn record_response(record: &Record) -> Response {
    let status = match record {
        Record::Decision { .. } => StatusCode::OK,
        Record::Error(e) if e.code == ErrorCode::IdempotencyConflict => StatusCode::CONFLICT,
        Record::Error(e) if e.code == ErrorCode::LedgerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        Record::Error(e) if e.code == ErrorCode::PartitionNotOwned => StatusCode::MISDIRECTED_REQUEST,
        Record::Error(_) => StatusCode::BAD_REQUEST,
    };
    json_response(status, record.to_json())
}

/// The routes, with their limits and auth.
pub fn router(host: Host, config: ServeConfig) -> Router {
    let state = AppState { host, in_flight: Arc::new(Semaphore::new(config.in_flight_max)), config: Arc::new(config) };
    let admin = Router::new()
        .route("/v1/reviews/{id}/approve", post(approve))
        .route("/v1/reviews/{id}/decline", post(decline))
        .route("/v1/ruleset/reload", post(reload))
        .route("/v1/ruleset/rollback", post(rollback))
        .route("/v1/rollout/share", put(rollout_share))
        .route("/v1/rollout/promote", post(rollout_promote))
        .route("/v1/rollout/abort", post(rollout_abort))
        .route("/v1/rollout/rollback", post(rollout_rollback))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let api = Router::new()
        .route("/v1/transactions", post(transaction))
        .route("/v1/transactions:batch", post(batch))
        .route("/v1/transactions/{id}", get(stored_decision))
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/ruleset", get(ruleset))
        .route("/v1/shadow", get(shadow))
        .route("/v1/rollout", get(rollout))
        .merge(admin)
        .layer(middleware::from_fn_with_state(state.clone(), limits));
    Router::new()
        .route("/healthz", get(|| async { axum::Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { json_response(StatusCode::OK, OPENAPI.to_owned()) }))
        .merge(api)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route") })
        .method_not_allowed_fallback(|request: Request| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                format!("{} is not allowed on {} (see /openapi.json)", request.method(), request.uri().path()),
            )
        })
        .layer(middleware::from_fn(uri_length))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting, finishes the
/// requests in flight, and waits until everything acknowledged is durable.
/// A connection that does not send a request's headers within
/// `config.header_read_timeout` is closed.
pub async fn serve(
    host: Host,
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let header_read_timeout = config.header_read_timeout;
    let app = router(host.clone(), config);
    let (closing, _) = tokio::sync::watch::channel(false);
    let (done, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, then go on accepting.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut closing = closing.subscribe();
        let done = done.clone();
        tokio::spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = closing.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(done);
        });
    }
    host.begin_shutdown();
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    drop(listener);
    let _ = closing.send(true);
    drop(done);
    let _ = all_done.recv().await;
    host.flush().await.map_err(std::io::Error::other)?;
    tracing::info!("stopped; every acknowledged decision is durable");
    Ok(())
}

/// Refuses request targets over `URI_BYTES_MAX` with the JSON error shape.
async fn uri_length(request: Request, next: Next) -> Response {
    let length = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if length > URI_BYTES_MAX {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "URI_TOO_LONG",
            format!("the request target has {length} bytes, at most {URI_BYTES_MAX} are read"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Reads and drops what a client still sends of a refused request's body
/// (bounded in bytes and time), so that it reads the answer instead of
/// finding the connection closed under its upload.
async fn drain(body: Body, limit: usize) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut seen = 0usize;
    let _ = tokio::time::timeout(Duration::from_millis(DRAIN_MS), async {
        while let Some(Ok(frame)) = body.frame().await {
            seen = seen.saturating_add(frame.data_ref().map_or(0, |d| d.len()));
            if seen > limit {
                break;
            }
        }
    })
    .await;
}

/// In-flight limit and request timeout for the API routes.
async fn limits(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        state.host.metrics().refused("overloaded");
        drain(request.into_body(), state.config.body_bytes_max.saturating_mul(DRAIN_BODY_LIMITS)).await;
        let mut r = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "OVERLOADED",
            format!("more than {} requests in flight; retry shortly", state.config.in_flight_max),
        )
        .into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        return r;
    };
    match tokio::time::timeout(state.config.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            state.host.metrics().refused("timeout");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "TIMEOUT",
                format!(
                    "no answer within {} ms; the transaction may still be decided — retry with the same id to get its decision",
                    state.config.request_timeout.as_millis()
                ),
            )
            .into_response()
        }
    }
}

/// Bearer-token check for the admin routes, in constant time.
async fn require_token(State(state): State<AppState>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let ok = match (&state.config.admin_token, given) {
        (Some(want), Some(given)) => {
            want.len() == given.len() && want.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        }
        _ => false,
    };
    if !ok {
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "this endpoint needs `Authorization: Bearer <admin token>`",
        )
        .into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    next.run(request).await
}

/// Reads a request body of at most `body_bytes_max` bytes. A body that has
/// not arrived within half the request time is answered 408, one the client
/// broke off 400 — never the 503 of a decision that may have been made.
async fn read_body(state: &AppState, body: Body) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let limit = state.config.body_bytes_max;
    let read = async {
        let mut body = body;
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "BODY_INCOMPLETE", format!("the request body broke off: {e}"))
            })?;
            if let Some(data) = frame.data_ref() {
                if out.len().saturating_add(data.len()) > limit {
                    state.host.metrics().refused("too-large");
                    drain(body, limit.saturating_mul(DRAIN_BODY_LIMITS)).await;
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "BODY_TOO_LARGE",
                        format!("the request body is larger than {limit} bytes"),
                    ));
                }
                out.extend_from_slice(data);
            }
        }
        Ok(axum::body::Bytes::from(out))
    };
    let patience = state.config.request_timeout / 2;
    match tokio::time::timeout(patience, read).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "BODY_TIMEOUT",
            format!(
                "the request body did not arrive within {} ms (shorter than its Content-Length?); nothing was decided",
                patience.as_millis()
            ),
        )),
    }
}

/// A path parameter, or the JSON error of one that does not decode.
fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_PATH", format!("the path does not decode: {e}")))
}

async fn transaction(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let Ok(text) = String::from_utf8(bytes.to_vec()) else {
        return Ok(record_response(&crate::service::malformed(1, "the body is not UTF-8".into())));
    };
    let record = state.host.evaluate_line(1, text).await?;
    Ok(record_response(&record))
}

async fn batch(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(&bytes).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "MALFORMED_JSON",
        field: None,
        message: format!("a batch is a JSON array of transactions: {e}"),
    })?;
    if items.len() > state.config.batch_transactions_max {
        state.host.metrics().refused("too-large");
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BATCH_TOO_LARGE",
            format!("{} transactions; a batch holds at most {}", items.len(), state.config.batch_transactions_max),
        ));
    }
    let lines = items.iter().map(|r| r.get().to_owned()).collect();
    let records = state.host.evaluate_batch(lines).await?;
    let mut out = Vec::with_capacity(records.len().saturating_mul(1024).min(state.config.body_bytes_max) + 2);
    out.push(b'[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        r.write_json(&mut out);
        out.pop(); // the newline
    }
    out.push(b']');
    Ok(json_response(StatusCode::OK, String::from_utf8(out).expect("JSON is UTF-8")))
}

/// Reads something of the ledger by the path's id off the runtime's
/// workers (the ledger lock may be held by a commit waiting on the disk).
async fn lookup<T: Send + 'static>(
    state: &AppState,
    path: Result<Path<String>, PathRejection>,
    read: impl FnOnce(&Host, &str) -> T + Send + 'static,
) -> Result<(String, T), ApiError> {
    let id = path_id(path)?;
    let host = state.host.clone();
    tokio::task::spawn_blocking(move || {
        let found = read(&host, &id);
        (id, found)
    })
    .await
    .map_err(|e| ApiError::from(HostError::Internal(e.to_string())))
}

async fn stored_decision(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let (id, found) = lookup(&state, path, |host, id| host.decision(id)).await?;
    match found? {
        Some(d) => Ok(json_response(StatusCode::OK, d.to_json())),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no decision for transaction {id:?}"))),
    }
}

async fn account(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let (id, found) = lookup(&state, path, |host, id| host.account(id)).await?;
    match found {
        Some(a) => Ok(axum::Json(a).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no account {id:?}"))),
    }
}

async fn resolve(state: AppState, id: String, approve: bool) -> Result<Response, ApiError> {
    let (resolution, hold) = state.host.resolve_hold(&id, approve).await?;
    Ok(axum::Json(resolution.answer(&hold)).into_response())
}

async fn approve(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    resolve(state, path_id(path)?, true).await
}

async fn decline(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    resolve(state, path_id(path)?, false).await
}

fn ruleset_json(host: &Host) -> Value {
    let live = host.ruleset();
    let mut status = host.status().to_json();
    status["rules"] = live
        .rules
        .iter()
        .map(|r| {
            json!({
                "name": &*r.name,
                "kind": r.kind.as_str(),
                "version": &*r.version,
                "weight": r.weight,
                "on_error": r.on_error.as_str(),
            })
        })
        .collect();
    status
}

async fn ruleset(State(state): State<AppState>) -> Response {
    axum::Json(ruleset_json(&state.host)).into_response()
}

fn reload_answer(
    host: &Host,
    outcome: Result<ReloadOutcome, rulehost_engine::reload::ReloadError>,
    refused: &'static str,
) -> Response {
    match outcome {
        Ok(ReloadOutcome::Swapped { from, to }) => {
            axum::Json(json!({ "result": "swapped", "from": from, "to": to, "ruleset": ruleset_json(host) }))
                .into_response()
        }
        Ok(ReloadOutcome::Unchanged) => {
            axum::Json(json!({ "result": "unchanged", "ruleset": ruleset_json(host) })).into_response()
        }
        Err(e) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, refused, e.to_string()).into_response(),
    }
}

async fn reload(State(state): State<AppState>) -> Response {
    let outcome = state.host.reload().await;
    reload_answer(&state.host, outcome, "RELOAD_REFUSED")
}

async fn rollback(State(state): State<AppState>) -> Response {
    let outcome = state.host.rollback().await;
    reload_answer(&state.host, outcome, "ROLLBACK_REFUSED")
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.host.is_ready() {
        axum::Json(json!({ "status": "ready", "ruleset": &*state.host.version() })).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NOT_READY", "stopping, or the ledger store failed")
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.host.metrics_text().await,
    )
        .into_response()
}
