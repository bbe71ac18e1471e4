//! rulehost as a service: [`service`] is the library API an embedding
//! service uses (`HostBuilder` → `Host`, async, rule calls on its own
//! pool, canary rollout); [`server`] serves a `Host` over HTTP (`rulehost
//! serve`); [`metrics`] exports Prometheus metrics.
//!
//! The only crate of the host that depends on an HTTP stack (axum, hyper)
//! and on tokio's runtime.

pub mod location;
pub mod metrics;
pub mod server;
pub mod service;
