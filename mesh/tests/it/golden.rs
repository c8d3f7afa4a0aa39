//! Golden tests on the shop application (tests/fixtures/shop): `build` and `explain -o json`
//! through the real binary, `analyze` on tests/fixtures/broken. Expected outputs live in
//! tests/golden/; `UPDATE_GOLDEN=1 cargo test -p outrigger-mesh` rewrites them (review the diff).

use crate::support::{CART, STOREFRONT, golden_dir, routes, stdout};

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    code: i32,
}

const SHOP: &str = "tests/fixtures/shop";

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { name: "build-storefront.json", args: &["build", "-f", SHOP, "--for", STOREFRONT], code: 0 },
    Case { name: "build-cart.yaml", args: &["build", "-f", SHOP, "--for", CART, "--format", "yaml"], code: 0 },
    Case { name: "explain-catalog-jason.json", args: &["explain", "-f", SHOP, "--from", STOREFRONT, "-o", "json", "-H", "end-user: jason", "GET http://catalog:8080/api/items"], code: 0 },
    Case { name: "explain-catalog-canary.json", args: &["explain", "-f", SHOP, "--from", STOREFRONT, "-o", "json", "-H", "end-user: mallory", "GET http://catalog.shop:8080/api/items"], code: 0 },
    Case { name: "explain-catalog-preview-query.json", args: &["explain", "-f", SHOP, "--from", STOREFRONT, "-o", "json", "GET http://10.96.10.20:8080/api/items?preview=true"], code: 0 },
    Case { name: "explain-cart-checkout-delay.json", args: &["explain", "-f", SHOP, "--from", STOREFRONT, "-o", "json", "POST http://cart:8080/cart/checkout"], code: 0 },
    Case { name: "explain-payments-chaos.json", args: &["explain", "-f", SHOP, "--from", STOREFRONT, "-o", "json", "-H", "x-chaos: on", "POST http://payments:9090/shop.Payments/Charge"], code: 0 },
    Case { name: "explain-payments-from-cart.json", args: &["explain", "-f", SHOP, "--from", CART, "-o", "json", "-H", "x-chaos: on", "POST http://payments.shop.svc.cluster.local:9090/shop.Payments/Charge"], code: 0 },
    Case { name: "explain-storefront-redirect.json", args: &["explain", "-f", SHOP, "--from", CART, "-o", "json", "GET http://storefront/old-shop/index.html"], code: 0 },
    Case { name: "explain-storefront-healthz.txt", args: &["explain", "-f", SHOP, "--from", CART, "GET http://storefront/healthz"], code: 0 },
    Case { name: "explain-external.json", args: &["explain", "-f", SHOP, "--from", CART, "-o", "json", "GET https://api.stripe.com/v1/charges"], code: 0 },
    Case { name: "analyze-broken.txt", args: &["analyze", "-f", "tests/fixtures/broken"], code: 3 },
    Case { name: "analyze-shop.txt", args: &["analyze", "-f", SHOP], code: 0 },
];

#[test]
fn golden_outputs() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in CASES {
        let output = routes(case.args);
        assert_eq!(
            output.status.code(),
            Some(case.code),
            "{}: {}",
            case.name,
            crate::support::stderr(&output)
        );
        let actual = stdout(&output);
        let path = golden_dir().join(case.name);
        if update {
            std::fs::write(&path, &actual).expect("golden file written");
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}:\n{}",
                case.name,
                pretty_assertions::StrComparison::new(&expected, &actual)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden outputs differ (UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}

/// The answers the issue asks for, checked by key (the golden files hold the full text).
#[test]
fn explain_answers_the_questions() {
    let json = |args: &[&str]| -> serde_json::Value {
        let output = routes(args);
        assert!(
            output.status.success(),
            "{}",
            crate::support::stderr(&output)
        );
        serde_json::from_str(&stdout(&output)).expect("explain prints JSON")
    };
    let jason = json(&[
        "explain",
        "-f",
        SHOP,
        "--from",
        STOREFRONT,
        "-o",
        "json",
        "-H",
        "end-user: jason",
        "GET http://catalog:8080/",
    ]);
    assert_eq!(jason["protocol"], "http");
    assert_eq!(jason["virtualService"], "shop/catalog");
    assert_eq!(jason["rule"], 0);
    assert_eq!(
        jason["destinations"][0]["cluster"],
        "outbound|8080|v2|catalog.shop.svc.cluster.local"
    );
    assert_eq!(jason["endpoints"], serde_json::json!(["10.244.2.22:8080"]));
    assert_eq!(jason["retries"]["attempts"], 2);
    assert_eq!(jason["timeout"], serde_json::Value::Null);

    let canary = json(&[
        "explain",
        "-f",
        SHOP,
        "--from",
        STOREFRONT,
        "-o",
        "json",
        "GET http://catalog:8080/api/items",
    ]);
    assert_eq!(canary["rule"], 2);
    let weights: Vec<_> = canary["destinations"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| (d["subset"].clone(), d["weight"].clone()))
        .collect();
    assert_eq!(
        weights,
        vec![
            (serde_json::json!("v1"), serde_json::json!(90)),
            (serde_json::json!("v3"), serde_json::json!(10))
        ]
    );
    assert_eq!(canary["timeout"], "2s");
    assert_eq!(
        canary["retries"],
        serde_json::json!({"attempts": 3, "retryOn": "5xx,connect-failure", "perTryTimeout": "500ms"})
    );
    // the draining v1 endpoint is not a candidate
    assert_eq!(
        canary["endpoints"],
        serde_json::json!(["10.244.1.20:8080", "10.244.3.23:8080"])
    );
    assert_eq!(canary["skipped"].as_array().expect("list").len(), 2);

    let chaos = json(&[
        "explain",
        "-f",
        SHOP,
        "--from",
        STOREFRONT,
        "-o",
        "json",
        "-H",
        "x-chaos: 1",
        "POST http://payments:9090/x",
    ]);
    assert_eq!(chaos["protocol"], "grpc");
    assert_eq!(
        chaos["fault"]["abort"],
        serde_json::json!({"httpStatus": 503, "percentage": 50.0})
    );
    let cart = json(&[
        "explain",
        "-f",
        SHOP,
        "--from",
        CART,
        "-o",
        "json",
        "-H",
        "x-chaos: 1",
        "POST http://payments:9090/x",
    ]);
    assert_eq!(
        cart["rule"], 1,
        "sourceLabels app=storefront excludes the cart's proxy"
    );
    assert_eq!(
        cart["retries"],
        serde_json::Value::Null,
        "attempts: 0 disables retries"
    );
}
