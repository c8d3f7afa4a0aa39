//! pilot's integration tests, one binary: the reflectors and the xDS server against the
//! testkit's fake API server.

mod cluster;
mod shutdown;
mod support;
mod xds;
