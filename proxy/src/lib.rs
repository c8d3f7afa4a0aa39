//! The outrigger-proxy data plane and status server.
