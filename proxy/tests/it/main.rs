//! Integration tests of outrigger-proxy without root: a whole proxy in-process with a test
//! original-destination source, and the real binary through its command line.

mod cli;
mod config_file;
mod data_path;
mod discovery;
mod l7;
mod l7_grpc;
mod l7_peer;
mod l7_request;
mod l7_upstream;
mod status_limits;
mod support;
