//! Helpers for the end-to-end tests: network namespaces, binaries, processes.
