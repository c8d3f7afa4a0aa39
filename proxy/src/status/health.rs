//! `/healthz/ready`: 200 once the capture listeners are bound, 503 before and while draining.

use axum::extract::State;
use axum::http::StatusCode;

use crate::drain::Lifecycle;

pub async fn ready(State(lifecycle): State<Lifecycle>) -> (StatusCode, &'static str) {
    if lifecycle.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if lifecycle.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
