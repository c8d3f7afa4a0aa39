//! `outrigger-injector`, the HTTPS admission webhook around the injection engine
//! ([`outrigger_inject`]): TLS, the memo of answers, metrics, and the configuration watch and
//! reload. Everything about templates and pods lives in the engine.

pub mod server;
