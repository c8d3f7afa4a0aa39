//! The replica memo: replicas of a workload (the same pod with another token volume name and
//! uid) get exactly the answer a fresh server gives them, with their own uid; anything else
//! about the pod, and the configuration, still change the answer.

use serde_json::{Value, json};

use crate::common::{apply_patch, pod_review, post_json, router};

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
