//! The webhook's whole answer path on an arbitrary request body: `admission::decode`, the pod
//! object, then `review::respond` (the injection engine, `outrigger_inject::inject`, and the
//! JSONPatch). Never a panic; a patch in the answer applies to the request's pod.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use outrigger_inject::Config;
use outrigger_webhook::server::{admission, review};

static CONFIG: LazyLock<Config> =
    LazyLock::new(|| Config::embedded().expect("the embedded configuration loads"));

fuzz_target!(|body: &[u8]| {
    let Ok(decoded) = admission::decode(body) else {
        return;
    };
    let Ok(pod) = decoded.request.parse_object() else {
        return;
    };
    let answer = review::respond(&decoded.request, pod.as_ref(), Vec::new(), &CONFIG);
    if let (Some(patch), Some(pod)) = (&answer.response.patch, pod) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .expect("the patch is base64");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("the patch is JSON");
        let mut patched = pod;
        json_patch::patch(&mut patched, &patch).expect("the patch applies to the request's pod");
    }
    admission::AdmissionReviewResponse::new(decoded.version, answer.response)
        .to_vec()
        .expect("the answer encodes");
});
