//! Reads the pod from the API server with the plugin's kubeconfig, retrying transient failures.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use k8s_openapi::api::core::v1::Pod;
use kube::client::Body;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{Status, params::GetParams};
use kube::{Client, Config, Resource};
use tokio::time::Instant;

/// The largest answer read for one pod. etcd keeps objects up to 1.5 MiB; the JSON the API
/// server writes for one is a little larger. Anything bigger is not a pod we can use, and
/// reading it would cost the node its memory (a 300 MB answer once used 937 MB).
pub const MAX_POD_RESPONSE_BYTES: usize = 8 << 20;

/// First pause between attempts; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Bound on connecting to the API server in one attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("reading kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building the API client")]
    Client(#[source] kube::Error),
    /// The API server answered with a status that retrying will not change.
    #[error("API server refused GET pod")]
    Refused(#[source] kube::Error),
    /// The answer was bigger than [`MAX_POD_RESPONSE_BYTES`]; not retried.
    #[error("API server's answer to GET pod is larger than {limit} bytes (not retried)")]
    TooLarge { limit: usize },
    /// The answer arrived but is not a Pod; not retried (the next answer would be the same).
    #[error("API server's answer to GET pod is not a Pod object (not retried)")]
    Undecodable(#[source] serde_json::Error),
    /// Every attempt failed transiently until the budget ran out.
    /// Not "not reachable": a 503 or 429 is an answer; the last error (the chain) says which.
    #[error("GET pod failed {attempts} times (retried until the budget ran out)")]
    GaveUp {
        attempts: u32,
        #[source]
        last: kube::Error,
    },
}

/// Builds a client from a kubeconfig file; nothing is sent yet.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client, FetchError> {
    let kubeconfig_error = |source| FetchError::Kubeconfig {
        path: path.display().to_string(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(kubeconfig_error)?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    Client::try_from(config).map_err(FetchError::Client)
}

/// Why one attempt failed: a transport or API error (maybe worth another attempt), or an answer
/// that arrived and cannot be used (never retried).
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("the answer is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the answer is not a Pod object")]
    Undecodable(#[source] serde_json::Error),
}

/// GET /api/v1/namespaces/{namespace}/pods/{name}, retried for up to `budget`; the answer is
/// read up to [`MAX_POD_RESPONSE_BYTES`].
pub async fn fetch_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    budget: Duration,
) -> Result<Pod, FetchError> {
    retry(budget, || {
        get_pod(client, namespace, name, MAX_POD_RESPONSE_BYTES)
    })
    .await
}

/// One GET of a pod, reading at most `limit` bytes of the answer (kube's `Api::get` reads any
/// size). Error answers become `kube::Error::Api` as kube makes them.
pub async fn get_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    limit: usize,
) -> Result<Pod, AttemptError> {
    let url = Pod::url_path(&(), Some(namespace));
    let request = kube::core::Request::new(url)
        .get(name, &GetParams::default())
        .map_err(kube::Error::BuildRequest)?;
    let response = client.send(request.map(Body::from)).await?;
    let status = response.status();
    let declared = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(AttemptError::TooLarge { limit });
    }
    let bytes = match Limited::new(response.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            return Err(match err.downcast::<kube::Error>() {
                Ok(err) => AttemptError::Kube(*err),
                Err(_) => AttemptError::TooLarge { limit },
            });
        }
    };
    if status.is_client_error() || status.is_server_error() {
        let status = match serde_json::from_slice::<Status>(&bytes) {
            Ok(status) => status,
            Err(_) => {
                let text = String::from_utf8_lossy(&bytes);
                Status::failure(text.trim(), "Failed to parse error data")
                    .with_code(status.as_u16())
            }
        };
        return Err(AttemptError::Kube(kube::Error::Api(status.boxed())));
    }
    serde_json::from_slice::<Pod>(&bytes).map_err(AttemptError::Undecodable)
}

/// Server errors (5xx), throttling (429) and transport failures are worth another attempt.
/// A body kube itself could not decode is not: the next answer would be the same.
pub fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        kube::Error::SerdeError(_) | kube::Error::FromUtf8(_) | kube::Error::BuildRequest(_) => {
            false
        }
        _ => true,
    }
}

/// Runs `attempt` until it succeeds, fails permanently or `budget` is spent. Each attempt is
/// bounded by the time left, so a hanging server cannot stretch the budget.
pub async fn retry<T, E, F, Fut>(budget: Duration, mut attempt: F) -> Result<T, FetchError>
where
    E: Into<AttemptError>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + budget;
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome =
            match tokio::time::timeout(left.max(Duration::from_millis(1)), attempt()).await {
                Ok(outcome) => outcome.map_err(Into::into),
                Err(_) => Err(AttemptError::Kube(kube::Error::Service(
                    "attempt timed out at the retry deadline".into(),
                ))),
            };
        let err = match outcome {
            Ok(value) => return Ok(value),
            Err(AttemptError::TooLarge { limit }) => return Err(FetchError::TooLarge { limit }),
            Err(AttemptError::Undecodable(err)) => return Err(FetchError::Undecodable(err)),
            Err(AttemptError::Kube(err)) if !is_transient(&err) => {
                return Err(FetchError::Refused(err));
            }
            Err(AttemptError::Kube(err)) => err,
        };
        let now = Instant::now();
        if now + backoff >= deadline {
            return Err(FetchError::GaveUp {
                attempts,
                last: err,
            });
        }
        tracing::debug!(attempts, error = %err, "API request failed, retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(&format!("status {code}"), "Test")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn transient_classification() {
        assert!(is_transient(&api_error(500)));
        assert!(is_transient(&api_error(503)));
        assert!(is_transient(&api_error(429)));
        assert!(!is_transient(&api_error(404)));
        assert!(!is_transient(&api_error(403)));
        assert!(is_transient(&kube::Error::Service(
            "connection refused".into()
        )));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_then_succeeds() {
        let calls = AtomicU32::new(0);
        let value = retry(Duration::from_secs(30), || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(api_error(500)),
                _ => Ok("pod"),
            }
        })
        .await
        .unwrap();
        assert_eq!(value, "pod");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_stop_at_once() {
        let calls = AtomicU32::new(0);
        let err = retry(Duration::from_secs(30), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(api_error(403))
        })
        .await
        .unwrap_err();
        assert!(matches!(err, FetchError::Refused(_)), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_the_budget_is_spent() {
        let start = Instant::now();
        let err = retry(Duration::from_secs(30), || async {
            Err::<(), _>(api_error(503))
        })
        .await
        .unwrap_err();
        assert!(
            err.to_string().starts_with("GET pod failed ")
                && !err.to_string().contains("reachable"),
            "{err}"
        );
        let FetchError::GaveUp { attempts, .. } = err else {
            panic!("expected GaveUp, got {err:?}")
        };
        assert!(attempts > 5, "only {attempts} attempts");
        let spent = start.elapsed();
        assert!(spent <= Duration::from_secs(30), "spent {spent:?}");
        assert!(
            spent >= Duration::from_secs(28),
            "gave up early after {spent:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_attempt_is_cut_at_the_deadline() {
        let start = Instant::now();
        let err = retry(Duration::from_secs(3), || {
            std::future::pending::<Result<(), kube::Error>>()
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, FetchError::GaveUp { attempts: 1, .. }),
            "{err:?}"
        );
        assert!(start.elapsed() <= Duration::from_secs(3));
    }
}
