//! The wire contract of pilot and the proxy's discovery client: the protobuf and gRPC code
//! generated from `proto/` (see proto/README.md) and the type URLs of our resources. One
//! definition, used by both sides (as linkerd2-proxy-api is for Linkerd).
#![allow(clippy::all, missing_docs, unreachable_pub)]

/// Type URL of a resolved destination (routes, protocol, cluster policy).
pub const DESTINATION_TYPE: &str = "type.outrigger.dev/outrigger.v1alpha1.Destination";
/// Type URL of one cluster's endpoints.
pub const ENDPOINTS_TYPE: &str = "type.outrigger.dev/outrigger.v1alpha1.Endpoints";

pub mod codec;
pub mod subscribe;

pub mod envoy {
    pub mod config {
        pub mod core {
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    pub mod service {
        pub mod discovery {
            pub mod v3 {
                tonic::include_proto!("envoy.service.discovery.v3");
            }
        }
    }
}

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub mod outrigger {
    pub mod v1alpha1 {
        tonic::include_proto!("outrigger.v1alpha1");
    }
}
