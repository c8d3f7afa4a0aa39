//! `outrigger-iptables`: parses Istio's flags, then plans, prints or applies the capture rules.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context as _;
use outrigger_init::apply::{self, ApplyOutcome};
use outrigger_init::flags::{self, FlagsError, Invocation};
use outrigger_init::host::{self, HostOptions};
use outrigger_init::names::VALIDATION_EXIT_CODE;
use outrigger_init::{plan, render, validation};
use outrigger_runtime::error_chain;
use outrigger_runtime::logging::{self, LogFormat, Logging};

fn main() -> ExitCode {
    // Variables that are not UTF-8 cannot be ours; skip them instead of panicking.
    let env: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let invocation = match flags::parse(std::env::args_os(), &env) {
        Ok(invocation) => invocation,
        Err(FlagsError::Usage(err)) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
        Err(FlagsError::Config(err)) => {
            eprintln!("outrigger-iptables: {err}");
            return ExitCode::FAILURE;
        }
        Err(FlagsError::Conflict(err)) => {
            eprintln!("outrigger-iptables: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Logs go to stderr (stdout is for `--dry-run`), filtered by `RUST_LOG` (default `info`).
    logging::init(Logging {
        format: if invocation.log_as_json {
            LogFormat::Json
        } else {
            LogFormat::Text
        },
        directives: env.get(logging::FILTER_ENV).map(String::as_str),
        default: "info",
        file: None,
    });
    for warning in &invocation.warnings {
        tracing::warn!("{warning}");
    }
    match run(&invocation) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::NotCaptured(err)) => {
            eprintln!("outrigger-iptables: {}", error_chain(&err));
            ExitCode::from(VALIDATION_EXIT_CODE)
        }
        Err(Failure::Other(err)) => {
            eprintln!("outrigger-iptables: {err:#}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    NotCaptured(outrigger_init::error::ValidationError),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(err: E) -> Self {
        Failure::Other(err.into())
    }
}

fn run(inv: &Invocation) -> Result<(), Failure> {
    let cfg = &inv.capture;
    let needs_dns_servers = cfg.redirect_dns && !cfg.capture_all_dns;
    let host = host::detect_host_info(&HostOptions {
        ipv6: inv.ipv6,
        dual_stack: cfg.dual_stack,
        resolv_conf: needs_dns_servers.then_some(inv.resolv_conf.as_path()),
    })?;
    let plan = plan(cfg, &host);
    if inv.dry_run {
        print!("{}", render(&plan).dry_run_text());
        return Ok(());
    }
    if inv.cleanup_only {
        apply::cleanup(cfg, &plan, &inv.apply).context("removing the capture rules")?;
        tracing::info!("capture rules removed");
        return Ok(());
    }
    if !inv.skip_rule_apply {
        match apply::apply(cfg, &plan, &inv.apply).context("installing the capture rules")? {
            ApplyOutcome::Applied => tracing::info!("capture rules installed"),
            ApplyOutcome::AlreadyApplied => tracing::info!("capture rules already installed"),
            ApplyOutcome::Reconciled => {
                tracing::info!("stale rules removed and capture rules installed")
            }
        }
    }
    if inv.run_validation {
        validation::run_validation(cfg).map_err(|err| match err {
            err @ outrigger_init::error::ValidationError::NotCaptured { .. } => {
                Failure::NotCaptured(err)
            }
            other => Failure::Other(other.into()),
        })?;
    }
    Ok(())
}
