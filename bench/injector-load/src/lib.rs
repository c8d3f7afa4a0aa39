//! The request pool of the injector load benchmark, shared by the `injector-load` binary and
//! the in-process handler benchmark (`benches/handler.rs`).

pub mod reviews;

/// The AdmissionReview each request is a replica of: a pod CREATE of a two-container pod with
/// probes, as the API server sends it.
pub const REVIEW: &str = include_str!("../../../webhook/tests/server/fixtures/pod-review.json");
