//! Keeps the `caBundle` of every webhook in one MutatingWebhookConfiguration equal to the
//! serving CA (self-managed certificates): patched at start, when the CA changes, and whenever
//! someone else changes the object (watch).

use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Field manager name on our patches.
pub const FIELD_MANAGER: &str = "outrigger-injector";
/// Wait before retrying after a failed patch or a broken watch.
const RETRY: Duration = Duration::from_secs(5);

/// The strategic-merge patch that sets `ca_pem` on every webhook whose bundle differs, or
/// `None` when all are already equal. Webhooks merge by `name`, so nothing else is touched.
pub fn needed_patch(config: &MutatingWebhookConfiguration, ca_pem: &[u8]) -> Option<Value> {
    let stale: Vec<Value> = config
        .webhooks
        .iter()
        .flatten()
        .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(ca_pem))
        .map(|w| {
            json!({
                "name": w.name,
                "clientConfig": {"caBundle": k8s_openapi::ByteString(ca_pem.to_vec())}
            })
        })
        .collect();
    (!stale.is_empty()).then(|| json!({ "webhooks": stale }))
}

/// Watches one MutatingWebhookConfiguration and keeps its caBundles equal to the CA in `ca`.
#[derive(Debug)]
pub struct CaBundleKeeper {
    api: Api<MutatingWebhookConfiguration>,
    name: String,
    ca: watch::Receiver<Vec<u8>>,
}

impl CaBundleKeeper {
    pub fn new(
        client: kube::Client,
        name: impl Into<String>,
        ca: watch::Receiver<Vec<u8>>,
    ) -> Self {
        CaBundleKeeper {
            api: Api::all(client),
            name: name.into(),
            ca,
        }
    }

    /// Patch `config` if needed; returns whether a patch was sent.
    async fn ensure(&self, config: &MutatingWebhookConfiguration) -> Result<bool, kube::Error> {
        let ca = self.ca.borrow().clone();
        let Some(patch) = needed_patch(config, &ca) else {
            return Ok(false);
        };
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.api
            .patch(&self.name, &params, &Patch::Strategic(patch))
            .await?;
        Ok(true)
    }

    async fn ensure_logged(&self, config: &MutatingWebhookConfiguration) -> bool {
        match self.ensure(config).await {
            Ok(true) => {
                tracing::info!(webhook_config = %self.name, "caBundle updated");
                true
            }
            Ok(false) => true,
            Err(error) => {
                tracing::warn!(webhook_config = %self.name, %error, "cannot update caBundle; retrying");
                false
            }
        }
    }

    /// Run until the task is dropped.
    pub async fn run(mut self) {
        let selector = format!("metadata.name={}", self.name);
        let stream = watcher(
            self.api.clone(),
            watcher::Config::default().fields(&selector),
        )
        .default_backoff()
        .applied_objects();
        let mut stream = std::pin::pin!(stream);
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(config)) => {
                        retry_at = (!self.ensure_logged(&config).await)
                            .then(|| tokio::time::Instant::now() + RETRY);
                    }
                    Some(Err(error)) => {
                        tracing::warn!(webhook_config = %self.name, %error, "watch failed; it restarts");
                    }
                    None => return,
                },
                changed = self.ca.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tracing::info!(webhook_config = %self.name, "serving CA changed");
                    retry_at = Some(tokio::time::Instant::now());
                }
                () = retry => {
                    retry_at = match self.api.get_opt(&self.name).await {
                        Ok(Some(config)) => (!self.ensure_logged(&config).await)
                            .then(|| tokio::time::Instant::now() + RETRY),
                        Ok(None) => {
                            tracing::warn!(webhook_config = %self.name, "MutatingWebhookConfiguration not found; waiting for it");
                            None
                        }
                        Err(error) => {
                            tracing::warn!(webhook_config = %self.name, %error, "cannot read the MutatingWebhookConfiguration");
                            Some(tokio::time::Instant::now() + RETRY)
                        }
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bundles: &[Option<&[u8]>]) -> MutatingWebhookConfiguration {
        serde_json::from_value(json!({
            "metadata": {"name": "outrigger-injector"},
            "webhooks": bundles.iter().enumerate().map(|(i, b)| {
                let mut client = json!({"service": {"name": "s", "namespace": "n"}});
                if let Some(b) = b {
                    client["caBundle"] = serde_json::to_value(k8s_openapi::ByteString(b.to_vec())).unwrap();
                }
                json!({"name": format!("w{i}.example.com"), "clientConfig": client,
                       "sideEffects": "None", "admissionReviewVersions": ["v1"]})
            }).collect::<Vec<_>>()
        }))
        .unwrap()
    }

    #[test]
    fn patches_only_stale_webhooks_by_name() {
        let ca = b"-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n";
        let patch = needed_patch(&config(&[Some(ca), None, Some(b"old")]), ca).unwrap();
        let names: Vec<&str> = patch["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["w1.example.com", "w2.example.com"]);
        let encoded = patch["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .unwrap();
        use base64::Engine as _;
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
            ca
        );
        assert_eq!(needed_patch(&config(&[Some(ca), Some(ca)]), ca), None);
    }
}
