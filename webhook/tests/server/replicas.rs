//! The replica memo: replicas of a workload (the same pod with another token volume name and
//! uid) get exactly the answer a fresh server gives them, with their own uid; anything else
//! about the pod, and the configuration, still change the answer.

use serde_json::{Value, json};

use outrigger_webhook::server::replica_memo::{self, Limits};

use crate::common::{apply_patch, pod_review, post_json, router, router_with_memo};

const FIXTURE_TOKEN: &str = "kube-api-access-x7k2p";

/// The fixture review as the API server sends another replica: new uid, new token volume name.
fn replica(review: &Value, uid: &str, token: &str) -> Value {
    let text = review
        .to_string()
        .replace(FIXTURE_TOKEN, &format!("kube-api-access-{token}"));
    let mut replica: Value = serde_json::from_str(&text).expect("still JSON");
    replica["request"]["uid"] = json!(uid);
    replica
}

/// What a server that never saw another pod answers.
async fn fresh_answer(review: &Value) -> Value {
    let (app, _) = router();
    post_json(&app, "/inject", review).await.1
}

fn volume_names(pod: &Value) -> Vec<&str> {
    pod["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect()
}

#[tokio::test]
async fn replicas_share_one_answer_that_a_fresh_server_would_give() {
    let (app, state) = router();
    let review = pod_review();
    assert!(
        review.to_string().contains(FIXTURE_TOKEN),
        "fixture changed"
    );
    for (i, token) in ["x7k2p", "q9z4m", "b2c4d"].iter().enumerate() {
        let r = replica(&review, &format!("uid-{i}"), token);
        let (_, answer) = post_json(&app, "/inject", &r).await;
        assert_eq!(answer["response"]["uid"], format!("uid-{i}"));
        assert_eq!(answer, fresh_answer(&r).await, "replica {i}");
        let pod = apply_patch(&r["request"]["object"], &answer["response"]);
        let own = format!("kube-api-access-{token}");
        assert!(volume_names(&pod).contains(&own.as_str()), "{pod}");
    }
    assert_eq!(
        state.replies.len(),
        1,
        "three replicas, one remembered answer"
    );
    let metrics = state.metrics.render();
    assert!(
        metrics.contains("sidecar_injection_success_total 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn another_pod_or_path_is_answered_afresh() {
    let (app, state) = router();
    let review = pod_review();
    post_json(&app, "/inject", &review).await;

    let mut other = replica(&review, "uid-1", "q9z4m");
    other["request"]["object"]["metadata"]["annotations"]["sidecar.istio.io/proxyCPU"] =
        json!("300m");
    let (_, answer) = post_json(&app, "/inject", &other).await;
    assert_eq!(answer, fresh_answer(&other).await);
    assert_ne!(
        answer["response"]["patch"],
        post_json(&app, "/inject", &review).await.1["response"]["patch"]
    );

    let (_, with_params) = post_json(&app, "/inject/cluster/c1", &review).await;
    let (fresh, _) = router();
    assert_eq!(
        with_params,
        post_json(&fresh, "/inject/cluster/c1", &review).await.1
    );
    assert_eq!(
        state.replies.len(),
        3,
        "pod, other pod, pod on another path"
    );
}

#[tokio::test]
async fn a_pod_with_two_token_volumes_is_never_looked_up() {
    let (app, state) = router();
    let mut review = pod_review();
    review["request"]["object"]["spec"]["volumes"]
        .as_array_mut()
        .expect("volumes")
        .push(json!({"name": "kube-api-access-zzzzz", "emptyDir": {}}));
    let (_, answer) = post_json(&app, "/inject", &review).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer, fresh_answer(&review).await);
    assert_eq!(state.replies.len(), 0);
}

/// Issue 14: the key masked every character after `kube-api-access-` up to the next quote,
/// anywhere in the pod, so these two pods (without a token volume, as with
/// `automountServiceAccountToken: false`) got one and the same patch.
#[tokio::test]
async fn a_proxy_config_that_mentions_the_token_volume_is_part_of_the_key() {
    let (app, state) = router();
    let with_concurrency = |n: u32| {
        let mut review = pod_review();
        let pod = &mut review["request"]["object"];
        let spec = &mut pod["spec"];
        spec["automountServiceAccountToken"] = json!(false);
        let not_token = |v: &Value| v["name"].as_str().is_none_or(|n| n != FIXTURE_TOKEN);
        spec["volumes"]
            .as_array_mut()
            .expect("volumes")
            .retain(not_token);
        for container in spec["containers"].as_array_mut().expect("containers") {
            if let Some(mounts) = container["volumeMounts"].as_array_mut() {
                mounts.retain(not_token);
            }
        }
        pod["metadata"]["annotations"]["proxy.istio.io/config"] = json!(format!(
            "# no kube-api-access- volume here\nconcurrency: {n}\n"
        ));
        assert!(!review.to_string().contains(FIXTURE_TOKEN));
        review
    };
    let (four, eight) = (with_concurrency(4), with_concurrency(8));
    let (_, answer_four) = post_json(&app, "/inject", &four).await;
    let (_, answer_eight) = post_json(&app, "/inject", &eight).await;
    assert_eq!(answer_four, fresh_answer(&four).await);
    assert_eq!(answer_eight, fresh_answer(&eight).await);
    assert_ne!(
        answer_four["response"]["patch"],
        answer_eight["response"]["patch"]
    );
    assert_eq!(state.replies.len(), 2, "two pods, two answers");
}

/// The fixture with its own `pod-template-hash` and an annotation of `bytes` bytes.
fn large_pod(i: usize, bytes: usize) -> Value {
    let mut review = replica(&pod_review(), &format!("uid-{i}"), "q9z4m");
    let metadata = &mut review["request"]["object"]["metadata"];
    metadata["labels"]["pod-template-hash"] = json!(format!("h{i}"));
    metadata["annotations"]["example.com/ballast"] = json!("b".repeat(bytes));
    review
}

/// Issue 14: the memo kept whole pod texts (256 of up to 6 MiB). Now it keeps answers, counted
/// against its budget, whatever the pods' size.
#[tokio::test]
async fn big_distinct_pods_keep_the_memo_within_its_budget() {
    let budget = 128 * 1024;
    let (app, state) = router_with_memo(Limits {
        budget_bytes: budget,
        max_pod_bytes: 2 << 20,
    });
    for i in 0..40 {
        let review = large_pod(i, 1 << 20);
        let (_, answer) = post_json(&app, "/inject", &review).await;
        assert_eq!(answer["response"]["allowed"], true);
        assert!(state.replies.bytes() <= budget, "{}", state.replies.bytes());
    }
    let kept = state.replies.len();
    assert!(kept > 0 && kept < 40, "{kept} answers kept");
    // The newest is answered from the memo, with its replica's uid.
    let again = replica(&large_pod(39, 1 << 20), "uid-again", "b2c4d");
    let (_, answer) = post_json(&app, "/inject", &again).await;
    assert_eq!(answer["response"]["uid"], "uid-again");
    assert_eq!(state.replies.len(), kept);
}

#[tokio::test]
async fn pods_over_the_size_cap_are_not_memoized() {
    let (app, state) = router();
    let review = large_pod(0, replica_memo::DEFAULT_MAX_POD_BYTES);
    let (_, answer) = post_json(&app, "/inject", &review).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(state.replies.len(), 0);
}
