//! Who a proxy is: its projected service-account token (audience `istio-ca`, as Istio's
//! `istio-token` volume) checked with a TokenReview; the identity's namespace chooses the view.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

/// Istio's audience for the `istio-token` projected volume.
pub const ISTIO_CA_AUDIENCE: &str = outrigger_api::names::TOKEN_AUDIENCE;
/// A reviewed token is trusted this long before it is reviewed again (a reconnect storm after a
/// pilot restart then costs one TokenReview per proxy, not one per stream).
const CACHE_TTL: Duration = Duration::from_secs(60);
/// TokenReviews in flight at once. Each one in flight holds a connection of the API client,
/// which pools it afterwards (hyper keeps idle connections 90 s, unbounded per host): 2,000
/// proxies connecting at once opened as many connections, each with its buffers. The others
/// wait their turn; a review takes milliseconds and a token reviewed meanwhile is not re-reviewed.
pub const MAX_CONCURRENT_REVIEWS: usize = 16;

/// A proxy's identity: the service account its token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error(
        "no bearer token in the authorization metadata (the proxy needs the istio-token volume)"
    )]
    NoToken,
    #[error("token not authenticated by the API server: {0}")]
    Rejected(String),
    #[error("token is for {0:?}, not a service account (system:serviceaccount:NAMESPACE:NAME)")]
    NotServiceAccount(String),
    #[error("TokenReview failed: {0}")]
    Review(String),
}

/// How tokens are checked.
// One per process: the size of the disabled variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Authenticator {
    /// TokenReview against the API server with this audience.
    TokenReview {
        client: kube::Client,
        audience: String,
        cache: Mutex<HashMap<String, (Identity, Instant)>>,
        in_flight: tokio::sync::Semaphore,
    },
    /// No check: the identity is taken from the proxy's node id. Local development only
    /// (`--insecure-skip-auth`).
    Disabled,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TokenReview { audience, .. } => write!(f, "TokenReview(audience {audience})"),
            Self::Disabled => write!(f, "Disabled"),
        }
    }
}

/// `system:serviceaccount:NS:NAME` → identity.
pub fn parse_username(username: &str) -> Result<Identity, AuthError> {
    let rest = username
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(|| AuthError::NotServiceAccount(username.to_owned()))?;
    match rest.split_once(':') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains(':') =>
        {
            Ok(Identity {
                namespace: namespace.to_owned(),
                service_account: name.to_owned(),
            })
        }
        _ => Err(AuthError::NotServiceAccount(username.to_owned())),
    }
}

/// The token of an `authorization: Bearer TOKEN` value.
pub fn bearer(value: Option<&str>) -> Result<&str, AuthError> {
    value
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::NoToken)
}

impl Authenticator {
    pub fn token_review(client: kube::Client, audience: &str) -> Self {
        Self::TokenReview {
            client,
            audience: audience.to_owned(),
            cache: Mutex::new(HashMap::new()),
            in_flight: tokio::sync::Semaphore::new(MAX_CONCURRENT_REVIEWS),
        }
    }

    /// `None` when checking is disabled.
    pub async fn authenticate(
        &self,
        token: Result<&str, AuthError>,
    ) -> Result<Option<Identity>, AuthError> {
        let Self::TokenReview {
            client,
            audience,
            cache,
            in_flight,
        } = self
        else {
            return Ok(None);
        };
        let token = token?;
        let cached = || {
            cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(token)
                .filter(|(_, at)| at.elapsed() < CACHE_TTL)
                .map(|(identity, _)| identity.clone())
        };
        if let Some(identity) = cached() {
            return Ok(Some(identity));
        }
        let _turn = in_flight
            .acquire()
            .await
            .map_err(|_| AuthError::Review("the TokenReview limiter is closed".to_owned()))?;
        if let Some(identity) = cached() {
            return Ok(Some(identity));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![audience.clone()]),
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Review(outrigger_runtime::error_chain(&e)))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(AuthError::Rejected(
                status
                    .error
                    .unwrap_or_else(|| "not authenticated".to_owned()),
            ));
        }
        if let Some(audiences) = &status.audiences
            && !audiences.iter().any(|a| a == audience)
        {
            return Err(AuthError::Rejected(format!(
                "audiences {audiences:?} do not include {audience:?}"
            )));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        let identity = parse_username(&username)?;
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        cache.insert(token.to_owned(), (identity.clone(), Instant::now()));
        Ok(Some(identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_and_bearer_values() {
        assert_eq!(
            parse_username("system:serviceaccount:shop:catalog"),
            Ok(Identity {
                namespace: "shop".into(),
                service_account: "catalog".into()
            })
        );
        for bad in [
            "system:serviceaccount:shop",
            "admin",
            "system:serviceaccount::x",
            "system:serviceaccount:a:b:c",
        ] {
            assert!(
                matches!(parse_username(bad), Err(AuthError::NotServiceAccount(_))),
                "{bad}"
            );
        }
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("Basic abc")), Err(AuthError::NoToken));
        assert_eq!(bearer(None), Err(AuthError::NoToken));
    }
}
