//! Request matching: the one implementation the proxy and `explain` share. First rule whose
//! match blocks (OR) has one whose conditions (AND) all hold wins.

use regex::Regex;

use crate::config::{Action, MatchKind, RequestMatch, Route, RouteTable, StringMatcher};

/// What matching reads of a request. The proxy implements it over its request type.
pub trait RequestView {
    fn method(&self) -> &str;
    fn scheme(&self) -> &str;
    /// `:authority` / `Host`, as sent.
    fn authority(&self) -> &str;
    /// Path with the query string.
    fn path(&self) -> &str;
    /// A header by lowercase name.
    fn header(&self, name: &str) -> Option<&str>;
}

/// A request held by value (tests, `explain`).
#[derive(Debug, Clone, Default)]
pub struct SimpleRequest {
    pub method: String,
    pub scheme: String,
    pub authority: String,
    pub path: String,
    /// Names as given; compared case-insensitively.
    pub headers: Vec<(String, String)>,
}

impl RequestView for SimpleRequest {
    fn method(&self) -> &str {
        &self.method
    }
    fn scheme(&self) -> &str {
        &self.scheme
    }
    fn authority(&self) -> &str {
        &self.authority
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A regex of a route that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route of {route}: invalid RE2 regex {regex:?}: {message}")]
pub struct MatchError {
    pub route: String,
    pub regex: String,
    pub message: String,
}

/// The regexes of a table, compiled, in the order of `routes[].matches[]` and their fields.
#[derive(Debug, Clone, Default)]
pub struct CompiledRoutes {
    regexes: std::collections::HashMap<String, Option<Regex>>,
    error: Option<MatchError>,
}

/// Compiles an Istio regex as a full match (`^(?:…)$`); Rust's regex syntax is RE2's.
pub fn compile_full_match(regex: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{regex})$"))
}

impl CompiledRoutes {
    fn build(table: &RouteTable) -> Self {
        let mut compiled = Self::default();
        for route in &table.routes {
            for block in &route.matches {
                let matchers = block
                    .uri
                    .iter()
                    .chain(&block.method)
                    .chain(&block.authority)
                    .chain(&block.scheme)
                    .chain(block.headers.values())
                    .chain(block.without_headers.values())
                    .chain(block.query_params.values());
                for matcher in matchers.filter(|m| m.kind == MatchKind::Regex) {
                    if compiled.regexes.contains_key(&matcher.value) {
                        continue;
                    }
                    let regex = match compile_full_match(&matcher.value) {
                        Ok(regex) => Some(regex),
                        Err(err) => {
                            compiled.error.get_or_insert_with(|| MatchError {
                                route: route_name(route),
                                regex: matcher.value.clone(),
                                message: err.to_string(),
                            });
                            None
                        }
                    };
                    compiled.regexes.insert(matcher.value.clone(), regex);
                }
            }
        }
        compiled
    }

    fn is_match(&self, matcher: &StringMatcher, value: &str, ignore_case: bool) -> bool {
        match matcher.kind {
            MatchKind::Present => true,
            MatchKind::Exact if ignore_case => value.eq_ignore_ascii_case(&matcher.value),
            MatchKind::Exact => value == matcher.value,
            MatchKind::Prefix if ignore_case => value
                .get(..matcher.value.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(&matcher.value)),
            MatchKind::Prefix => value.starts_with(&matcher.value),
            MatchKind::Regex => self
                .regexes
                .get(&matcher.value)
                .and_then(Option::as_ref)
                .is_some_and(|regex| regex.is_match(value)),
        }
    }

    /// Why `block` does not match, or `None` when it does.
    fn block_mismatch(&self, block: &RequestMatch, request: &dyn RequestView) -> Option<String> {
        let full_path = request.path();
        let path = full_path
            .split_once('?')
            .map_or(full_path, |(path, _)| path);
        let fields = [
            ("uri", &block.uri, path, block.ignore_uri_case),
            ("method", &block.method, request.method(), false),
            ("authority", &block.authority, request.authority(), false),
            ("scheme", &block.scheme, request.scheme(), false),
        ];
        for (field, matcher, value, ignore_case) in fields {
            if let Some(matcher) = matcher
                && !self.is_match(matcher, value, ignore_case)
            {
                return Some(format!("{field} {value:?} is not {}", describe(matcher)));
            }
        }
        for (name, matcher) in &block.headers {
            match request.header(name) {
                None => {
                    return Some(format!(
                        "header {name:?} is absent (wanted {})",
                        describe(matcher)
                    ));
                }
                Some(value) if !self.is_match(matcher, value, false) => {
                    return Some(format!(
                        "header {name:?} value {value:?} is not {}",
                        describe(matcher)
                    ));
                }
                Some(_) => {}
            }
        }
        for (name, matcher) in &block.without_headers {
            if let Some(value) = request.header(name)
                && self.is_match(matcher, value, false)
            {
                return Some(format!(
                    "withoutHeaders: header {name:?} value {value:?} is {}",
                    describe(matcher)
                ));
            }
        }
        let query = full_path.split_once('?').map_or("", |(_, query)| query);
        for (name, matcher) in &block.query_params {
            let value = query
                .split('&')
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (key == name).then_some(value)
                })
                .next();
            match value {
                None => return Some(format!("query parameter {name:?} is absent")),
                Some(value) if !self.is_match(matcher, value, false) => {
                    return Some(format!(
                        "query parameter {name:?} value {value:?} is not {}",
                        describe(matcher)
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Why `route` does not match (one reason per match block), or `None` when it does.
    pub fn route_mismatch(&self, route: &Route, request: &dyn RequestView) -> Option<String> {
        if route.matches.is_empty() {
            return None;
        }
        let mut reasons = Vec::with_capacity(route.matches.len());
        for block in &route.matches {
            match self.block_mismatch(block, request) {
                None => return None,
                Some(reason) => reasons.push(format!("match[{}]: {reason}", block.index)),
            }
        }
        Some(reasons.join("; "))
    }
}

fn describe(matcher: &StringMatcher) -> String {
    match matcher.kind {
        MatchKind::Exact => format!("exact {:?}", matcher.value),
        MatchKind::Prefix => format!("prefix {:?}", matcher.value),
        MatchKind::Regex => format!("regex {:?}", matcher.value),
        MatchKind::Present => "present".to_owned(),
    }
}

fn route_name(route: &Route) -> String {
    match (&route.virtual_service, route.rule) {
        (Some(vs), Some(rule)) => format!("VirtualService {vs} http[{rule}]"),
        _ => "the default route".to_owned(),
    }
}

/// One step of an explained selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Position in `routes`.
    pub position: usize,
    pub reason: String,
}

impl RouteTable {
    fn compiled(&self) -> &CompiledRoutes {
        self.compiled.get_or_init(|| CompiledRoutes::build(self))
    }

    /// Compiles the regexes now; the error names the route and the regex.
    pub fn compile(&self) -> Result<(), MatchError> {
        match &self.compiled().error {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }

    /// The first route matching the request: its position in `routes` and its action.
    pub fn select(&self, request: &dyn RequestView) -> Option<(usize, &Action)> {
        let compiled = self.compiled();
        self.routes
            .iter()
            .enumerate()
            .find(|(_, route)| compiled.route_mismatch(route, request).is_none())
            .map(|(position, route)| (position, &route.action))
    }

    /// As `select`, with the reason each earlier route did not match.
    pub fn select_explained(&self, request: &dyn RequestView) -> (Option<usize>, Vec<Skipped>) {
        let compiled = self.compiled();
        let mut skipped = Vec::new();
        for (position, route) in self.routes.iter().enumerate() {
            match compiled.route_mismatch(route, request) {
                None => return (Some(position), skipped),
                Some(reason) => skipped.push(Skipped { position, reason }),
            }
        }
        (None, skipped)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{ActionKind, RetryPolicy};

    fn m(kind: MatchKind, value: &str) -> StringMatcher {
        StringMatcher {
            kind,
            value: value.to_owned(),
        }
    }

    fn route(matches: Vec<RequestMatch>) -> Route {
        Route {
            virtual_service: Some("ns/vs".to_owned()),
            rule: Some(0),
            name: None,
            matches,
            action: Action {
                kind: ActionKind::Route,
                destinations: Vec::new(),
                redirect: None,
                direct_response: None,
                rewrite: None,
            },
            timeout_ms: None,
            retries: RetryPolicy {
                attempts: 2,
                retry_on: String::new(),
                per_try_timeout_ms: None,
            },
            fault: None,
            headers: None,
            mirrors: Vec::new(),
        }
    }

    fn table(routes: Vec<Route>) -> RouteTable {
        RouteTable {
            routes,
            from_virtual_service: true,
            compiled: Default::default(),
        }
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> SimpleRequest {
        SimpleRequest {
            method: "GET".to_owned(),
            scheme: "http".to_owned(),
            authority: "catalog:8080".to_owned(),
            path: path.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn uri(kind: MatchKind, value: &str) -> RequestMatch {
        RequestMatch {
            uri: Some(m(kind, value)),
            ..Default::default()
        }
    }

    fn header(name: &str, matcher: StringMatcher) -> RequestMatch {
        RequestMatch {
            headers: BTreeMap::from([(name.to_owned(), matcher)]),
            ..Default::default()
        }
    }

    #[test]
    fn first_match_wins() {
        let t = table(vec![
            route(vec![uri(MatchKind::Prefix, "/a")]),
            route(vec![]),
            route(vec![]),
        ]);
        assert_eq!(t.select(&request("/a/b", &[])).map(|s| s.0), Some(0));
        assert_eq!(t.select(&request("/x", &[])).map(|s| s.0), Some(1));
    }

    #[test]
    fn blocks_or_conditions_and() {
        let mut both = uri(MatchKind::Prefix, "/a");
        both.method = Some(m(MatchKind::Exact, "POST"));
        let t = table(vec![route(vec![both, uri(MatchKind::Exact, "/b")])]);
        assert!(
            t.select(&request("/a", &[])).is_none(),
            "GET /a fails the AND"
        );
        assert!(t.select(&request("/b", &[])).is_some(), "second block ORs");
        let mut post = request("/a", &[]);
        post.method = "POST".to_owned();
        assert!(t.select(&post).is_some());
    }

    #[test]
    fn prefix_is_a_plain_string_prefix() {
        let t = table(vec![route(vec![uri(MatchKind::Prefix, "/api")])]);
        assert!(
            t.select(&request("/apix", &[])).is_some(),
            "not a path-segment prefix"
        );
        assert!(t.select(&request("/ap", &[])).is_none());
    }

    #[test]
    fn uri_ignores_the_query_string_and_can_ignore_case() {
        let t = table(vec![route(vec![uri(MatchKind::Exact, "/cart")])]);
        assert!(t.select(&request("/cart?id=1", &[])).is_some());
        assert!(t.select(&request("/CART", &[])).is_none());
        let mut block = uri(MatchKind::Exact, "/cart");
        block.ignore_uri_case = true;
        assert!(
            table(vec![route(vec![block])])
                .select(&request("/CART", &[]))
                .is_some()
        );
    }

    #[test]
    fn regex_matches_the_whole_value() {
        let t = table(vec![route(vec![uri(MatchKind::Regex, "/items/[0-9]+")])]);
        assert!(t.select(&request("/items/42", &[])).is_some());
        assert!(t.select(&request("/items/42/reviews", &[])).is_none());
        assert!(t.select(&request("/v1/items/42", &[])).is_none());
        let alternation = table(vec![route(vec![uri(MatchKind::Regex, "/a|/b")])]);
        assert!(alternation.select(&request("/b", &[])).is_some());
        assert!(
            alternation.select(&request("/bx", &[])).is_none(),
            "anchors wrap the alternation"
        );
    }

    #[test]
    fn invalid_regex_never_matches_and_compile_says_why() {
        let t = table(vec![route(vec![uri(MatchKind::Regex, "(")])]);
        assert!(t.select(&request("(", &[])).is_none());
        let err = t.compile().expect_err("bad regex");
        assert!(
            err.to_string()
                .contains("VirtualService ns/vs http[0]: invalid RE2 regex \"(\""),
            "{err}"
        );
    }

    #[test]
    fn header_names_are_case_insensitive_values_are_not() {
        let t = table(vec![route(vec![header(
            "end-user",
            m(MatchKind::Exact, "jason"),
        )])]);
        assert!(t.select(&request("/", &[("End-User", "jason")])).is_some());
        assert!(t.select(&request("/", &[("end-user", "Jason")])).is_none());
        assert!(t.select(&request("/", &[])).is_none());
    }

    #[test]
    fn present_matches_any_value_even_empty_and_exact_empty_only_empty() {
        let present = table(vec![route(vec![header(
            "x-canary",
            m(MatchKind::Present, ""),
        )])]);
        assert!(present.select(&request("/", &[("x-canary", "")])).is_some());
        assert!(
            present
                .select(&request("/", &[("x-canary", "yes")]))
                .is_some()
        );
        assert!(present.select(&request("/", &[])).is_none());
        let exact_empty = table(vec![route(vec![header(
            "x-canary",
            m(MatchKind::Exact, ""),
        )])]);
        assert!(
            exact_empty
                .select(&request("/", &[("x-canary", "")]))
                .is_some()
        );
        assert!(
            exact_empty
                .select(&request("/", &[("x-canary", "yes")]))
                .is_none()
        );
    }

    #[test]
    fn without_headers_inverts() {
        let block = RequestMatch {
            without_headers: BTreeMap::from([("x-debug".to_owned(), m(MatchKind::Present, ""))]),
            ..Default::default()
        };
        let t = table(vec![route(vec![block])]);
        assert!(t.select(&request("/", &[])).is_some());
        assert!(t.select(&request("/", &[("x-debug", "1")])).is_none());
    }

    #[test]
    fn explains_each_earlier_rule() {
        let t = table(vec![
            route(vec![header("end-user", m(MatchKind::Exact, "jason"))]),
            route(vec![
                uri(MatchKind::Prefix, "/admin"),
                uri(MatchKind::Exact, "/ops"),
            ]),
            route(vec![]),
        ]);
        let (chosen, skipped) = t.select_explained(&request("/items", &[]));
        assert_eq!(chosen, Some(2));
        assert_eq!(
            skipped[0].reason,
            "match[0]: header \"end-user\" is absent (wanted exact \"jason\")"
        );
        assert_eq!(
            skipped[1].reason,
            "match[0]: uri \"/items\" is not prefix \"/admin\"; match[0]: uri \"/items\" is not exact \"/ops\""
        );
    }

    #[test]
    fn query_params() {
        let block = RequestMatch {
            query_params: BTreeMap::from([("beta".to_owned(), m(MatchKind::Exact, "1"))]),
            ..Default::default()
        };
        let t = table(vec![route(vec![block])]);
        assert!(t.select(&request("/?a=2&beta=1", &[])).is_some());
        assert!(t.select(&request("/?beta=2", &[])).is_none());
    }
}
