//! Fault injection: the next requests answered with scripted API `Status`es, with raw bodies
//! (garbage, huge, truncated JSON) or served only after a delay, before normal service resumes;
//! for clients' retries, backoff and error messages.

use std::time::Duration;

/// One scripted answer, used by the next request (whatever it asks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// An API `Status` with this code (reason as the API server's: `NotFound`, `Conflict`,
    /// `Expired`, `TooManyRequests`, `ServiceUnavailable`, else `InternalError`).
    Status(u16),
    /// `200 OK`, `application/json`, with these bytes as the body.
    Body(Vec<u8>),
    /// Served normally, after this long.
    Delay(Duration),
}

/// The `reason` the API server gives with `code`.
pub(super) fn reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}
