//! The `cross_service:` section: every problem named with its key path, all at once.

use citadel_itest_core::config::ConfigLoader;
use serde_json::json;

fn problems(section: serde_json::Value) -> Vec<String> {
    let loader = ConfigLoader::new()
        .env(false)
        .section("cross_service")
        .set("cross_service", section);
    match loader.load_with(|c, p| citadel_itest_cross_service::from_config(c, p).is_some()) {
        Ok((_, true)) => Vec::new(),
        Ok((_, false)) => vec!["<no tester and no problem>".into()],
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn a_good_section_builds() {
    assert_eq!(
        problems(json!({"gateway": {
            "url": "http://127.0.0.1:58080/v1",
            "models": [{"id": "llama-3-8b"}, {"id": "text-embedding-small", "kind": "embeddings"}],
            "backends": [{"id": "model-a", "url": "http://127.0.0.1:58101/v1", "weight": 2}],
            "routes": [{"path": "/a/v1", "model": "llama-3-8b", "backends": ["model-a"]}],
            "load_balancing": {"requests": 300, "significance": 0.01, "sticky": {"header": "x-session-id"}},
            "performance": {"samples": 10, "max_overhead": "20ms"},
            "failover": {"disposable": true, "backend": "model-a", "action": "fixture_faults", "recovery_time": "15s"}
        }})),
        Vec::<String>::new()
    );
}

#[test]
fn every_problem_is_named_with_its_key() {
    let found = problems(json!({"gateway": {
        "name": "Gate Way",
        "url": "ftp://127.0.0.1/v1",
        "backend_header": "x backend",
        "models": [{"id": "m"}, {"id": "m"}, {"id": "e", "kind": "embeddings"}],
        "backends": [{"id": "a", "weight": 0, "models": ["nope"]}, {"id": "a", "url": "http://127.0.0.1:0"}],
        "routes": [{"path": "v1", "model": "x", "backends": ["zz"]}],
        "round_trip": {"model": "e", "max_tokens": 0},
        "load_balancing": {"requests": 0, "significance": 1.5, "sticky": {"header": "", "requests_per_key": 1}},
        "error_handling": {"oversized_bytes": 0},
        "performance": {"samples": 0},
        "failover": {"backend": "ghost", "action": {"command": {"stop": [], "start": ["x"]}}, "error_budget": 1.0}
    }}))
    .join("\n");
    for expected in [
        "cross_service.gateway.name",
        "cross_service.gateway.url",
        "cross_service.gateway.backend_header",
        "cross_service.gateway.models[1].id: duplicate model `m`",
        "cross_service.gateway.backends[0].weight",
        "cross_service.gateway.backends[0].models[0]: `nope` is not one of `models`",
        "cross_service.gateway.backends[1].id: duplicate backend `a`",
        "cross_service.gateway.backends[1].url: port 0",
        "cross_service.gateway.routes[0].path",
        "cross_service.gateway.routes[0].model",
        "cross_service.gateway.routes[0].backends[0]",
        "cross_service.gateway.round_trip.model: `e` is not a chat model",
        "cross_service.gateway.round_trip.max_tokens",
        "cross_service.gateway.load_balancing.requests",
        "cross_service.gateway.load_balancing.significance",
        "cross_service.gateway.load_balancing.sticky.header",
        "cross_service.gateway.load_balancing.sticky.requests_per_key",
        "cross_service.gateway.error_handling.oversized_bytes",
        "cross_service.gateway.performance.samples",
        "cross_service.gateway.failover.disposable: the failover check makes a backend unavailable",
        "cross_service.gateway.failover.backend: `ghost` is not one of `backends`",
        "cross_service.gateway.failover.action.command.stop",
        "cross_service.gateway.failover.error_budget",
    ] {
        assert!(found.contains(expected), "{expected} not in:\n{found}");
    }
    let unknown = problems(
        json!({"gateway": {"url": "http://127.0.0.1:1/v1", "models": [{"id": "m"}], "modles": 1}}),
    );
    assert!(unknown.join("\n").contains("modles"), "{unknown:?}");
}
