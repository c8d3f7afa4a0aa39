//! Reads the pod from the API server with the plugin's kubeconfig, retrying transient failures.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::time::Instant;

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
    /// Every attempt failed transiently until the budget ran out.
    #[error("API server not reachable after {attempts} attempts")]
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

/// GET /api/v1/namespaces/{namespace}/pods/{name}, retried for up to `budget`.
pub async fn fetch_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    budget: Duration,
) -> Result<Pod, FetchError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    retry(budget, || api.get(name)).await
}

/// Server errors (5xx), throttling (429) and transport failures are worth another attempt.
pub fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        _ => true,
    }
}

/// Runs `attempt` until it succeeds, fails permanently or `budget` is spent. Each attempt is
/// bounded by the time left, so a hanging server cannot stretch the budget.
pub async fn retry<T, F, Fut>(budget: Duration, mut attempt: F) -> Result<T, FetchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let deadline = Instant::now() + budget;
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome =
            match tokio::time::timeout(left.max(Duration::from_millis(1)), attempt()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(kube::Error::Service(
                    "attempt timed out at the retry deadline".into(),
                )),
            };
        let err = match outcome {
            Ok(value) => return Ok(value),
            Err(err) if !is_transient(&err) => return Err(FetchError::Refused(err)),
            Err(err) => err,
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
