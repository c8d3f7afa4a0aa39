//! outrigger-iptables' flag and env parser on arbitrary argv and environment: never a panic; an
//! accepted invocation has a configuration that validates and plans.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use outrigger_init::{HostInfo, flags, plan, render};

fuzz_target!(|input: (Vec<String>, Vec<(String, String)>)| {
    let (args, env) = input;
    let argv = std::iter::once("outrigger-iptables".to_owned()).chain(args.into_iter().take(32));
    let env: HashMap<String, String> = env.into_iter().take(16).collect();
    if let Ok(invocation) = flags::parse(argv, &env) {
        invocation
            .capture
            .validate()
            .expect("an accepted invocation validates");
        let rules = render(&plan(&invocation.capture, &HostInfo::default()));
        assert!(!rules.dry_run_text().is_empty());
    }
});
