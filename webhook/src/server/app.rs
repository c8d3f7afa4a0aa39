//! The HTTP routes: `POST /inject[/<k>/<v>...]`, `GET /healthz`, `GET /readyz`, and the
//! separate metrics router. Built once by [`app`] and testable without a socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use tower_http::timeout::RequestBodyTimeoutLayer;

use super::admission::{self, AdmissionResponse, AdmissionReviewResponse};
use super::body_budget::{BodyBudget, Busy, Reservation};
use super::config_reload::ConfigStore;
use super::metrics::{self, Metrics};
use super::path_env;
use super::replica_memo::{Limits, ReplicaMemo};
use super::review::{self, Decision};
use outrigger_inject::Config;

/// Name of the span around one admission request.
const ADMISSION_SPAN: &str = "admission";

/// Largest AdmissionReview accepted (the API server's own limit is 3 MiB per object).
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// How much of a too-large body is read and dropped so the client gets its 413; a larger one
/// is cut off (the connection closes).
pub const DISCARD_LIMIT_BYTES: usize = 4 * MAX_BODY_BYTES;

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<ConfigStore>,
    pub metrics: Arc<Metrics>,
    /// Set once configuration and certificate are loaded; cleared while shutting down.
    pub ready: Arc<AtomicBool>,
    /// Time a client gets to send the whole body.
    pub body_timeout: Duration,
    /// Recent answers, so the replicas of a workload skip decoding, injection and diff.
    pub replies: Arc<ReplicaMemo<Reply>>,
    /// Request-body bytes in flight, shared by every connection; a request waits for its share
    /// (at most `body_timeout`) before its body is read.
    pub bodies: BodyBudget,
}

impl AppState {
    /// State with the replica memo's default [`Limits`].
    pub fn new(config: Arc<ConfigStore>, metrics: Arc<Metrics>) -> Self {
        AppState::with_replica_memo(config, metrics, Limits::default())
    }

    pub fn with_replica_memo(
        config: Arc<ConfigStore>,
        metrics: Arc<Metrics>,
        memo: Limits,
    ) -> Self {
        AppState {
            config,
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            body_timeout: super::DEFAULT_READ_TIMEOUT,
            replies: Arc::new(ReplicaMemo::new(memo)),
            bodies: BodyBudget::new(super::body_budget::DEFAULT_BUDGET_BYTES),
        }
    }
}

/// The admission router.
pub fn app(state: AppState) -> Router {
    let body_timeout = state.body_timeout;
    Router::new()
        .route("/inject", post(inject))
        .route("/inject/", post(inject))
        .route("/inject/{*params}", post(inject_with_params))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .with_state(state)
}

/// The metrics router (served on its own plain-HTTP port).
pub fn metrics_app(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(metrics)
}

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// Request-level failures that never reach the engine; each names its problem.
#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("request body exceeds the limit of {MAX_BODY_BYTES} bytes (6 MiB)")]
    TooLarge,
    #[error("request body is empty; expected an AdmissionReview")]
    Empty,
    #[error("Content-Type must be application/json, got {0:?}")]
    MediaType(String),
    #[error("could not read the request body: {0}")]
    Read(String),
    #[error(transparent)]
    Busy(Busy),
}

impl HttpError {
    fn status(&self) -> StatusCode {
        match self {
            HttpError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::Empty => StatusCode::BAD_REQUEST,
            HttpError::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::Read(_) => StatusCode::REQUEST_TIMEOUT,
            HttpError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            HttpError::TooLarge => "body_too_large",
            HttpError::Empty => "empty_body",
            HttpError::MediaType(_) => "unsupported_media_type",
            HttpError::Read(_) => "body_read",
            HttpError::Busy(_) => "busy",
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status(), format!("{self}\n")).into_response()
    }
}

async fn inject(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, "", headers, body).await
}

async fn inject_with_params(
    State(state): State<AppState>,
    Path(params): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, &params, headers, body).await
}

async fn handle(state: AppState, params: &str, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    state.metrics.request();
    // The reservation is held until the answer is built: body, decoded pod and patch all
    // live until then.
    let response = match read_body(&state, &headers, body).await {
        Ok((bytes, _reservation)) => review_body(&state, params, &bytes),
        Err(error) => {
            state.metrics.failed(error.label());
            tracing::info_span!(ADMISSION_SPAN).in_scope(|| tracing::warn!(%error, "bad request"));
            error.into_response()
        }
    };
    state.metrics.observe_time(started.elapsed());
    response
}

/// Checks the headers, waits for the body's share of the budget of bodies in flight (the
/// declared length, or the largest body accepted when none is declared), then reads the body.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(axum::body::Bytes, Reservation), HttpError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(HttpError::MediaType(content_type.into_owned()));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        discard(body).await;
        return Err(HttpError::TooLarge);
    }
    let share = declared.map_or(MAX_BODY_BYTES, |len| len as usize);
    if state.bodies.would_wait(share) {
        state.metrics.body_budget_waited();
    }
    let reservation = state
        .bodies
        .reserve(share, state.body_timeout)
        .await
        .map_err(HttpError::Busy)?;
    let mut body = body;
    let mut bytes = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| HttpError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if bytes.len() + data.len() > MAX_BODY_BYTES {
            discard(body).await;
            return Err(HttpError::TooLarge);
        }
        bytes.extend_from_slice(&data);
    }
    if bytes.is_empty() {
        return Err(HttpError::Empty);
    }
    Ok((axum::body::Bytes::from(bytes), reservation))
}

/// Reads and drops the rest of a body refused for its size (at most [`DISCARD_LIMIT_BYTES`],
/// within the body timeout). The API server sends the body without `Expect: 100-continue`, so
/// it is still writing when the 413 is ready: answering before the body is read makes the
/// server close a socket with unread data, which the client sees as a TCP reset (HTTP/1.1) or a
/// reset stream (HTTP/2) instead of the answer.
async fn discard(mut body: Body) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            seen += data.len();
            if seen > DISCARD_LIMIT_BYTES {
                return;
            }
        }
    }
}

/// Decode, decide, answer. The request's span is opened once the review is decoded, with every
/// field but the decision: the JSON log format re-parses a span's fields on each later
/// `record`. With JSON logs at `info`, one record instead of four took the benchmark handler
/// from 52.9-62.8 µs to 51.2-54.7 µs (alternating runs of both builds).
fn review_body(state: &AppState, params: &str, body: &[u8]) -> Response {
    let review = match admission::decode(body) {
        Ok(decoded) => decoded,
        Err(failure) => {
            let _span = tracing::info_span!(
                ADMISSION_SPAN,
                uid = failure.uid.as_str(),
                decision = "failed"
            )
            .entered();
            state.metrics.failed("decode");
            tracing::warn!(error = %failure.error, "not an AdmissionReview");
            let response = AdmissionResponse::deny(
                failure.uid,
                400,
                format!("sidecar injector: {}", failure.error),
            );
            return json(&AdmissionReviewResponse::new(failure.version, response));
        }
    };
    let request = &review.request;
    let path = path_env::parse(params);
    let config = state.config.get();
    let key = request
        .object
        .as_deref()
        .filter(|_| request.is_pod_create())
        .and_then(|pod| {
            let context = format!(
                "{}\0{params}\0{}\0{}",
                config.id(),
                request.namespace.as_deref().unwrap_or_default(),
                request.name.as_deref().unwrap_or_default(),
            );
            state.replies.key(&context, pod.get().as_bytes())
        });
    let remembered = key.as_ref().and_then(|k| state.replies.get(k));
    let reply = match remembered {
        Some(reply) => reply,
        None => {
            let reply = Arc::new(decide(request, path.env, &config));
            if let Some(key) = key
                && reply.answer.replica_safe
            {
                state.replies.insert(key, reply.clone(), reply.heap_bytes());
            }
            reply
        }
    };
    let span = tracing::info_span!(
        ADMISSION_SPAN,
        uid = request.uid.as_ref(),
        namespace = reply.namespace,
        pod = reply.pod,
        decision = reply.answer.decision.as_str(),
    );
    let _entered = span.enter();
    if let Some(key) = &path.ignored_key {
        tracing::warn!(key = %key, "webhook path has a key without a value; ignored");
    }
    let response = &reply.answer.response;
    match &reply.answer.decision {
        Decision::Ignored => tracing::info!(
            kind = %request.kind.kind,
            operation = %request.operation,
            "not a pod CREATE; allowed unchanged"
        ),
        Decision::Skipped(reason) => {
            state.metrics.skipped(reason);
            tracing::info!(reason, "allowed without injection");
        }
        Decision::Injected => {
            state.metrics.injected();
            tracing::info!(dry_run = request.dry_run.unwrap_or(false), "injected");
        }
        Decision::Failed(reason) => {
            state.metrics.failed(reason);
            let message = response.status.as_ref().map(|s| s.message.as_str());
            tracing::warn!(reason, detail = message, "refused");
        }
    }
    let response = AdmissionResponse {
        uid: request.uid.to_string(),
        ..response.clone()
    };
    json(&AdmissionReviewResponse::new(review.version, response))
}

/// What the webhook answers a pod, apart from the request's uid.
#[derive(Debug)]
pub struct Reply {
    /// The answer, with an empty uid.
    answer: review::Answer,
    namespace: String,
    pod: String,
}

impl Reply {
    /// The bytes this reply holds besides its own size (what the replica memo counts).
    fn heap_bytes(&self) -> usize {
        let response = &self.answer.response;
        response.uid.capacity()
            + response.patch.as_ref().map_or(0, String::capacity)
            + response.status.as_ref().map_or(0, |s| s.message.capacity())
            + self.namespace.capacity()
            + self.pod.capacity()
    }
}

/// Decodes the pod and asks the engine (everything the replica memo saves).
fn decide(
    request: &admission::AdmissionRequest<'_>,
    proxy_env: Vec<(String, String)>,
    config: &Config,
) -> Reply {
    let (pod, answer) = match request.parse_object() {
        Ok(pod) => {
            let answer = review::respond(request, pod.as_ref(), proxy_env, config);
            (pod, answer)
        }
        // The review's decoding checked the text; only a pod nested deeper than the
        // parser's limit of 128 gets here.
        Err(e) => (
            None,
            review::Answer {
                response: AdmissionResponse::deny(
                    "",
                    400,
                    format!("sidecar injector: the pod: {e}"),
                ),
                decision: Decision::Failed("decode"),
                replica_safe: false,
            },
        ),
    };
    Reply {
        namespace: review::pod_namespace(request, pod.as_ref()).to_owned(),
        pod: review::pod_name(request, pod.as_ref()).to_owned(),
        answer: review::Answer {
            response: AdmissionResponse {
                uid: String::new(),
                ..answer.response
            },
            ..answer
        },
    }
}

fn json(review: &AdmissionReviewResponse) -> Response {
    match review.to_vec() {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        // Serializing plain strings and booleans cannot fail; answer readably anyway.
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
