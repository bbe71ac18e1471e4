//! The shadow report and the canary rollout over HTTP: `GET /v1/shadow`,
//! `GET /v1/rollout` and the admin requests that move a canary.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, AppState, read_body};
use crate::service::Host;
use rulehost_engine::rollout::RolloutError;

pub(super) async fn shadow(State(state): State<AppState>) -> Response {
    match state.host.shadow_report() {
        Some(report) => axum::Json(report).into_response(),
        None => {
            ApiError::new(StatusCode::NOT_FOUND, "NO_SHADOW", "this host runs no shadow candidate (serve --shadow DIR)")
                .into_response()
        }
    }
}

pub(super) async fn rollout(State(state): State<AppState>) -> Response {
    match state.host.rollout_status() {
        Some(status) => axum::Json(status).into_response(),
        None => no_rollout(),
    }
}

fn no_rollout() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "NO_ROLLOUT", "this host runs no canary rollout (serve --canary DIR)")
        .into_response()
}

/// The answer to an operator's rollout request: the transition and the
/// rollout's state after it.
fn rollout_answer(host: &Host, outcome: Result<rulehost_engine::rollout::Transition, RolloutError>) -> Response {
    match outcome {
        Ok(t) => axum::Json(json!({ "transition": t, "rollout": host.rollout_status() })).into_response(),
        Err(RolloutError::NoCandidate(_)) if host.rollout_status().is_none() => no_rollout(),
        Err(e @ (RolloutError::NoCandidate(_) | RolloutError::NothingToRollBack)) => {
            ApiError::new(StatusCode::CONFLICT, "ROLLOUT_CONFLICT", e.to_string()).into_response()
        }
        Err(e @ RolloutError::Share(_)) => {
            ApiError::new(StatusCode::BAD_REQUEST, "INVALID_SHARE", e.to_string()).into_response()
        }
        Err(e @ RolloutError::State { .. }) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ROLLOUT_STATE_UNAVAILABLE", e.to_string()).into_response()
        }
    }
}

/// `PUT /v1/rollout/share` with `{"percent": N}`.
pub(super) async fn rollout_share(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let invalid = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_SHARE", message);
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("the body is not JSON: {e}")))?;
    let percent = value
        .get("percent")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("expected {\"percent\": N} with N an integer in 0..=100".into()))?;
    let outcome = state.host.set_canary_share(percent).await;
    Ok(rollout_answer(&state.host, outcome))
}

pub(super) async fn rollout_promote(State(state): State<AppState>) -> Response {
    let outcome = state.host.promote_canary().await;
    rollout_answer(&state.host, outcome)
}

pub(super) async fn rollout_abort(State(state): State<AppState>) -> Response {
    let outcome = state.host.abort_canary().await;
    rollout_answer(&state.host, outcome)
}

pub(super) async fn rollout_rollback(State(state): State<AppState>) -> Response {
    let outcome = state.host.rollback_promotion().await;
    rollout_answer(&state.host, outcome)
}
