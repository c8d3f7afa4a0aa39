//! kube-inject's reading of a manifest stream (`manifest::inject_stream` and `check_stream`) on
//! arbitrary text: never a panic; an injected stream read again injects to the same text (a
//! second run changes nothing).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use outrigger_inject::Config;
use outrigger_inject::manifest::{self, Options};

static CONFIG: LazyLock<Config> =
    LazyLock::new(|| Config::embedded().expect("the embedded configuration loads"));

fuzz_target!(|text: &str| {
    let opts = Options::default();
    let _ = manifest::check_stream(text, &opts, &CONFIG);
    if let Ok(first) = manifest::inject_stream(text, &opts, &CONFIG) {
        let second = manifest::inject_stream(&first.output, &opts, &CONFIG)
            .expect("an injected stream reads again");
        assert_eq!(
            second.output, first.output,
            "injecting twice changed the stream"
        );
    }
});
