//! One CA for every replica in self-managed mode, shared through a Secret: a replica reads the
//! Secret, or creates it with a CA it generates; when two create at once, the API server's
//! conflict (409 AlreadyExists) means "another replica won: read its CA". Each replica then
//! issues its own serving certificate from that CA, so every replica's certificate verifies
//! against the one caBundle.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use super::selfsigned::{self, CaPair, SelfSignedError, SelfSignedFiles, ServiceNames};

/// Keys of the CA Secret (cert-manager's names for a CA Secret).
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";

/// Failure to get the shared CA.
#[derive(Debug, thiserror::Error)]
pub enum SharedCaError {
    #[error("cannot read the CA Secret {namespace}/{name}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot create the CA Secret {namespace}/{name}")]
    Create {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the CA Secret {namespace}/{name} lacks data.{key}")]
    Missing {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error("the CA Secret {namespace}/{name} was created by another replica and then deleted")]
    Vanished { namespace: String, name: String },
    #[error("cannot use the CA of Secret {namespace}/{name}")]
    Certificates {
        namespace: String,
        name: String,
        #[source]
        source: SelfSignedError,
    },
}

/// Where the shared CA lives.
#[derive(Debug, Clone)]
pub struct CaSecret {
    pub namespace: String,
    pub name: String,
}

/// How the CA was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obtained {
    /// This replica created the Secret.
    Created,
    /// The Secret existed.
    Read,
    /// Another replica created it between our read and our create.
    LostRace,
}

impl CaSecret {
    /// Read the CA from the Secret, or create the Secret with a new CA.
    pub async fn create_or_read(
        &self,
        client: kube::Client,
    ) -> Result<(CaPair, Obtained), SharedCaError> {
        let api: Api<Secret> = Api::namespaced(client, &self.namespace);
        if let Some(secret) = api
            .get_opt(&self.name)
            .await
            .map_err(|source| self.read(source))?
        {
            return Ok((self.ca_of(&secret)?, Obtained::Read));
        }
        let ca = selfsigned::generate_ca().map_err(|source| self.certificates(source))?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_owned(),
                    "outrigger-injector".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([
                (
                    CA_CERT_KEY.to_owned(),
                    ByteString(ca.cert_pem.clone().into_bytes()),
                ),
                (
                    CA_KEY_KEY.to_owned(),
                    ByteString(ca.key_pem.clone().into_bytes()),
                ),
            ])),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok((ca, Obtained::Created)),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let secret = api
                    .get_opt(&self.name)
                    .await
                    .map_err(|source| self.read(source))?
                    .ok_or_else(|| SharedCaError::Vanished {
                        namespace: self.namespace.clone(),
                        name: self.name.clone(),
                    })?;
                Ok((self.ca_of(&secret)?, Obtained::LostRace))
            }
            Err(source) => Err(SharedCaError::Create {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            }),
        }
    }

    /// The shared CA plus a serving certificate of this replica, written into `dir`.
    pub async fn ensure_dir(
        &self,
        client: kube::Client,
        dir: &Path,
        names: &ServiceNames,
    ) -> Result<(SelfSignedFiles, Obtained), SharedCaError> {
        let (ca, obtained) = self.create_or_read(client).await?;
        let files = selfsigned::write_issued(dir, &ca, names)
            .map_err(|source| self.certificates(source))?;
        Ok((files, obtained))
    }

    fn ca_of(&self, secret: &Secret) -> Result<CaPair, SharedCaError> {
        let field = |key: &'static str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .ok_or_else(|| SharedCaError::Missing {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    key,
                })
        };
        Ok(CaPair {
            cert_pem: field(CA_CERT_KEY)?,
            key_pem: field(CA_KEY_KEY)?,
        })
    }

    fn read(&self, source: kube::Error) -> SharedCaError {
        SharedCaError::Read {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    fn certificates(&self, source: SelfSignedError) -> SharedCaError {
        SharedCaError::Certificates {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }
}
