//! The generated protobuf and gRPC code of pilot/proto (see pilot/proto/README.md).
#![allow(clippy::all, missing_docs, unreachable_pub)]

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
