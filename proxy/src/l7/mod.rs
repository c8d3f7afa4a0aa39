//! Layer 7: the Istio traffic model (`--config-file`, the `ProxyConfig` of `outrigger-routes
//! build`) applied to captured connections whose destination speaks HTTP.

pub mod balance;
pub mod detect;
pub mod hash;
pub mod headers;
pub mod http;
pub mod inbound;
pub mod limit;
pub mod mirror;
pub mod outlier;
pub mod peer;
pub mod request;
pub mod source;
pub mod telemetry;
pub mod upstream;
