//! The Qdrant checks against the testkit's Qdrant fixture (Qdrant's gRPC services and REST API,
//! answering as Qdrant 1.18.3 does), a stopped server, closed ports and listeners that never
//! answer; temporary collections never outlive a cancelled or abandoned check.

mod common;

use std::time::{Duration, Instant};

use citadel_itest_core::config::Secret;
use citadel_itest_core::{ErrorKind, Outcome, RetryPolicy, Status, Suite, Threshold, run_one};
use citadel_itest_external_api::{Aspect, Distance, ExternalApiConfig, QdrantCheck, QdrantTarget};
use citadel_itest_testkit::{HangingListener, QdrantServer, closed_port};
use common::*;
use tokio_util::sync::CancellationToken;

const KEY: &str = "qdrant-test-key-2468";

fn target(q: &QdrantServer) -> QdrantTarget {
    QdrantTarget::new("vectors", q.grpc_url(), q.http_url())
        .api_key(Secret::inline(KEY))
        .request_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1))
}

/// Names of the collections the server holds with the harness prefix.
async fn leftovers(q: &QdrantServer) -> Vec<String> {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/collections", q.http_url()))
        .header("api-key", KEY)
        .send()
        .await
        .expect("list collections")
        .json()
        .await
        .expect("JSON");
    body["result"]["collections"]
        .as_array()
        .expect("collections")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .filter(|n| n.starts_with("citadel_itest_"))
        .map(str::to_string)
        .collect()
}

async fn assert_no_collections(q: &QdrantServer) {
    let mut left = Vec::new();
    for _ in 0..50 {
        left = leftovers(q).await;
        if left.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("temporary collections left behind: {left:?}");
}

#[tokio::test]
async fn all_six_checks_pass_against_the_qdrant_fixture() {
    let q = QdrantServer::builder()
        .api_key(KEY)
        .start()
        .await
        .expect("start qdrant");
    let tester = tester(ExternalApiConfig::new().qdrant(target(&q).distance(Distance::Dot)));
    let out = run(&tester, None).await;
    print_results(&out.results);
    assert_eq!(out.results.len(), 6);
    assert_all_passed(&out.results);
    assert_no_secret(&out.results, &[KEY]);

    let conn = result(&out.results, "external_api.vectors.connectivity");
    assert_eq!(value(conn, "server_version"), 11803.0);
    let auth = result(&out.results, "external_api.vectors.authentication");
    for m in [
        "grpc_wrong_key_rejection_time",
        "rest_wrong_key_rejection_time",
        "grpc_no_key_rejection_time",
        "rest_no_key_rejection_time",
    ] {
        assert!(value(auth, m) > 0.0, "{m}");
    }
    let ops = result(&out.results, "external_api.vectors.operations");
    assert_eq!(value(ops, "points"), 16.0);
    let perf = result(&out.results, "external_api.vectors.performance");
    print_latencies(perf);
    assert_eq!(value(perf, "samples"), 50.0);
    assert_eq!(
        perf.measurement("latency_p95").unwrap().threshold,
        Some(Threshold::lt(200.0))
    );
    let eh = result(&out.results, "external_api.vectors.error_handling");
    for m in ["grpc_refused_time", "rest_refused_time"] {
        assert!(value(eh, m) < 1000.0, "{m}");
    }
    for m in ["grpc_silent_timeout", "rest_silent_timeout"] {
        let t = value(eh, m);
        assert!((1000.0..1600.0).contains(&t), "{m} = {t}");
    }
    assert!(value(eh, "grpc_not_found_time") > 0.0);
    assert!(value(eh, "rest_not_found_time") > 0.0);
    assert_no_collections(&q).await;
}

#[tokio::test]
async fn authentication_fails_when_a_required_key_is_not_enforced() {
    // The server has no key at all; the config requires one.
    let q = QdrantServer::start().await.expect("start qdrant");
    let settings = settings();
    let r = run_one(&QdrantCheck::new(
        &target(&q),
        Aspect::Authentication,
        &settings,
    ))
    .await;
    assert_eq!(r.outcome.status(), Status::Failed, "{:?}", r.outcome);
    assert_eq!(
        r.outcome.message().unwrap(),
        format!(
            "gRPC ListCollections on {} with a wrong API key succeeded: the API key is not enforced",
            q.grpc_url()
        )
    );
    assert_no_secret(std::slice::from_ref(&r), &[KEY]);

    // Neither configured nor required: skipped, and says why.
    let open = QdrantTarget::new("vectors", q.grpc_url(), q.http_url()).require_api_key(false);
    let r = run_one(&QdrantCheck::new(&open, Aspect::Authentication, &settings)).await;
    assert_eq!(r.outcome.status(), Status::Skipped, "{:?}", r.outcome);
    assert!(
        r.outcome
            .message()
            .unwrap()
            .ends_with("so authentication is not required")
    );
}

#[tokio::test]
async fn a_wrong_configured_key_is_refused_on_both_protocols() {
    let q = QdrantServer::builder()
        .api_key(KEY)
        .start()
        .await
        .expect("start qdrant");
    let settings = settings();
    let wrong = target(&q).api_key(Secret::inline("not-the-key-8642"));
    let r = run_one(&QdrantCheck::new(&wrong, Aspect::Authentication, &settings)).await;
    assert_eq!(r.outcome.status(), Status::Failed);
    assert_eq!(
        r.outcome.message().unwrap(),
        format!(
            "gRPC ListCollections on {}: Unauthenticated with the configured API key",
            q.grpc_url()
        )
    );
    // Keyless access to a keyed server, not configured: it says the server wants a key.
    let keyless = QdrantTarget::new("vectors", q.grpc_url(), q.http_url()).require_api_key(false);
    let r = run_one(&QdrantCheck::new(
        &keyless,
        Aspect::Authentication,
        &settings,
    ))
    .await;
    assert_eq!(r.outcome.status(), Status::Failed);
    assert!(
        r.outcome
            .message()
            .unwrap()
            .ends_with("Unauthenticated without an API key: the server requires one but no api_key is configured"),
        "{:?}",
        r.outcome
    );
    assert_no_secret(std::slice::from_ref(&r), &["not-the-key-8642", KEY]);
}

#[tokio::test]
async fn a_stopped_server_closed_ports_and_silent_listeners_fail_within_their_bounds() {
    let q = QdrantServer::builder()
        .api_key(KEY)
        .start()
        .await
        .expect("start qdrant");
    let (stopped_grpc, stopped_rest) = (q.grpc_port(), q.http_port());
    q.stop().await.expect("stop qdrant");
    let (closed_a, closed_b) = (closed_port().unwrap(), closed_port().unwrap());
    let silent_grpc = HangingListener::start().await.unwrap();
    let silent_rest = HangingListener::start().await.unwrap();
    let settings = settings()
        .retry(RetryPolicy::new(0, Duration::ZERO))
        .timeout(Duration::from_secs(10));
    for (grpc, rest, why) in [
        (stopped_grpc, stopped_rest, "connection refused"),
        (closed_a, closed_b, "connection refused"),
        (
            silent_grpc.port(),
            silent_rest.port(),
            "no answer within 1s (request_timeout)",
        ),
    ] {
        let (g, r) = (
            format!("http://127.0.0.1:{grpc}"),
            format!("http://127.0.0.1:{rest}"),
        );
        let t = QdrantTarget::new("vectors", &g, &r)
            .api_key(Secret::inline(KEY))
            .request_timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_secs(1));
        for aspect in [
            Aspect::Connectivity,
            Aspect::Authentication,
            Aspect::Operations,
            Aspect::ErrorHandling,
        ] {
            let started = Instant::now();
            let res = run_one(&QdrantCheck::new(&t, aspect, &settings)).await;
            let took = started.elapsed();
            assert_eq!(
                res.outcome.status(),
                Status::Failed,
                "{aspect}: {:?}",
                res.outcome
            );
            let expected = match aspect {
                Aspect::Connectivity => format!("GET {r}/readyz: {why}"),
                Aspect::Authentication => format!("gRPC ListCollections on {g}: {why}"),
                Aspect::Operations => format!("gRPC create collection {} on {g}: {why}", "<name>"),
                _ => format!("recover: gRPC HealthCheck on {g}: {why}"),
            };
            let message = res.outcome.message().unwrap();
            if aspect == Aspect::Operations {
                let (head, tail) = expected.split_once("<name>").unwrap();
                assert!(
                    message.starts_with(&format!("{head}citadel_itest_")),
                    "{message}"
                );
                assert!(message.ends_with(tail), "{message}");
            } else {
                assert_eq!(message, expected, "{aspect}");
            }
            let bound = match aspect {
                Aspect::ErrorHandling => Duration::from_millis(3500),
                _ => Duration::from_millis(2500),
            };
            assert!(took < bound, "{aspect} against {g} took {took:?}");
            eprintln!("{aspect} against {g}: {message} ({took:?})");
        }
    }
}

#[tokio::test]
async fn read_only_mode_skips_every_write_and_says_so() {
    let q = QdrantServer::builder()
        .api_key(KEY)
        .start()
        .await
        .expect("start qdrant");
    let settings = settings().read_only(true);
    for (aspect, what) in [
        (
            Aspect::Operations,
            "the create/upsert/query/count/delete test",
        ),
        (Aspect::Performance, "the query benchmark"),
    ] {
        let r = run_one(&QdrantCheck::new(&target(&q), aspect, &settings)).await;
        assert_eq!(r.outcome.status(), Status::Skipped);
        assert_eq!(
            r.outcome.message().unwrap(),
            format!(
                "read-only mode (run.read_only: true): {what} on vectors needs a temporary \
                 collection (citadel_itest_<run>_*), so it was skipped"
            )
        );
    }
    run_one(&QdrantCheck::new(
        &target(&q),
        Aspect::ErrorHandling,
        &settings,
    ))
    .await
    .assert_passed();
    assert!(leftovers(&q).await.is_empty());
}

/// A target whose gRPC goes through a slow proxy: every chunk waits `delay` each way.
async fn slow_target(q: &QdrantServer, delay: Duration) -> (QdrantTarget, DelayProxy) {
    let proxy = DelayProxy::start(q.grpc_addr(), delay).await;
    let t = QdrantTarget::new(
        "vectors",
        format!("http://127.0.0.1:{}", proxy.port()),
        q.http_url(),
    )
    .api_key(Secret::inline(KEY))
    .request_timeout(Duration::from_secs(10))
    .connect_timeout(Duration::from_secs(5));
    (t, proxy)
}

/// Fire `cancel` as soon as a temporary collection exists (seen over REST, not the proxy).
fn cancel_when_created(
    q: &QdrantServer,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<bool> {
    let url = format!("{}/collections", q.http_url());
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        for _ in 0..500 {
            let body: serde_json::Value = client
                .get(&url)
                .header("api-key", KEY)
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("JSON");
            let created = body["result"]["collections"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("citadel_itest_"))
                })
            });
            if created {
                cancel.cancel();
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    })
}

#[tokio::test]
async fn a_run_cancelled_during_operations_leaves_no_collection() {
    let q = QdrantServer::builder()
        .api_key(KEY)
        .start()
        .await
        .expect("start qdrant");
    let (t, _proxy) = slow_target(&q, Duration::from_millis(100)).await;
    let tester = tester(ExternalApiConfig::new().qdrant(t));
    let cancel = CancellationToken::new();
    let watcher = cancel_when_created(&q, cancel.clone());
    let out = run(&tester, Some(cancel)).await;
    assert!(
        watcher.await.unwrap(),
        "no temporary collection was ever created"
    );
    print_results(&out.results);
    assert!(out.summary.interrupted);
    for id in [
        "external_api.vectors.operations",
        "external_api.vectors.performance",
    ] {
        let r = result(&out.results, id);
        assert!(
            matches!(
                r.outcome,
                Outcome::Error {
                    kind: ErrorKind::Cancelled,
                    ..
                }
            ),
            "{id}: {:?}",
            r.outcome
        );
    }
    // The checks deleted their collections within the grace, before the suite returned.
    assert!(leftovers(&q).await.is_empty(), "{:?}", leftovers(&q).await);
}

#[tokio::test]
async fn a_check_abandoned_mid_write_is_cleaned_up_by_the_runner() {
    let q = QdrantServer::builder()
        .api_key(KEY)
        .start()
        .await
        .expect("start qdrant");
    // The runner drops the check after a 50ms grace; the removal the check registered when it
    // created the collection runs then, and the run returns only after it.
    let (t, _proxy) = slow_target(&q, Duration::from_millis(300)).await;
    let settings = settings();
    let check = QdrantCheck::new(&t, Aspect::Operations, &settings);
    let cancel = CancellationToken::new();
    let watcher = cancel_when_created(&q, cancel.clone());
    let out = Suite::builder()
        .check("external_api", std::sync::Arc::new(check))
        .cancel_grace(Duration::from_millis(50))
        .cancellation(cancel)
        .build()
        .run(Vec::new())
        .await;
    assert!(
        watcher.await.unwrap(),
        "no temporary collection was ever created"
    );
    assert_eq!(out.results[0].outcome.status(), Status::Error);
    assert!(
        out.summary.leftovers.is_empty(),
        "{:?}",
        out.summary.leftovers
    );
    assert!(leftovers(&q).await.is_empty(), "{:?}", leftovers(&q).await);
}

/// The test points win by a clear margin at every dimension the performance check allows to
/// be small, under every distance: no verdict depends on how a server breaks ties.
#[tokio::test]
async fn performance_passes_at_every_dimension_from_2_to_16_under_every_distance() {
    let q = QdrantServer::builder()
        .api_key(KEY)
        .start()
        .await
        .expect("start qdrant");
    let settings = settings().samples(32);
    for dim in 2..=16u64 {
        for d in [
            Distance::Cosine,
            Distance::Dot,
            Distance::Euclid,
            Distance::Manhattan,
        ] {
            let t = target(&q).collection_dimension(dim).distance(d);
            let r = run_one(&QdrantCheck::new(&t, Aspect::Performance, &settings)).await;
            assert_eq!(
                r.outcome.status(),
                Status::Passed,
                "dimension {dim}, {d}: {:?}",
                r.outcome
            );
            assert_eq!(value(&r, "samples"), 32.0);
        }
    }
    assert!(leftovers(&q).await.is_empty(), "{:?}", leftovers(&q).await);
}

/// A run id of a run that started `ago` before now (`r` + 6 base-36 digits of its start + 3).
fn run_id_from(ago: Duration) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut secs = (std::time::SystemTime::now() - ago)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut out = vec![b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(secs % 36) as usize];
        secs /= 36;
    }
    format!("r{}x7q", String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn the_opt_in_sweep_removes_only_old_leftovers_of_the_harness() {
    let q = QdrantServer::builder()
        .api_key(KEY)
        .start()
        .await
        .expect("start qdrant");
    let old = format!(
        "citadel_itest_{}_vectors_perf_7",
        run_id_from(Duration::from_secs(3 * 3600))
    );
    let recent = format!(
        "citadel_itest_{}_vectors_ops_2",
        run_id_from(Duration::from_secs(60))
    );
    let client = reqwest::Client::new();
    for name in [
        old.as_str(),
        recent.as_str(),
        "orders",
        "citadel_itest_manual",
    ] {
        let r = client
            .put(format!("{}/collections/{name}", q.http_url()))
            .header("api-key", KEY)
            .json(&serde_json::json!({ "vectors": { "size": 4, "distance": "Cosine" } }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "create {name}: {}", r.status());
    }
    let names = |v: Vec<String>| -> Vec<String> {
        let mut v = v;
        v.sort();
        v
    };

    // Without the opt-in nothing is swept.
    let t = target(&q);
    run_one(&QdrantCheck::new(&t, Aspect::Operations, &settings()))
        .await
        .assert_passed();
    assert_eq!(
        names(leftovers(&q).await),
        names(vec![
            old.clone(),
            recent.clone(),
            "citadel_itest_manual".into()
        ])
    );

    let t = target(&q).sweep_older_than(Duration::from_secs(3600));
    let r = run_one(&QdrantCheck::new(&t, Aspect::Operations, &settings())).await;
    r.assert_passed();
    assert_eq!(r.details["swept"], serde_json::json!([old]));
    // The recent leftover, a name that only looks like ours, and other collections stay.
    assert_eq!(
        names(leftovers(&q).await),
        names(vec![recent, "citadel_itest_manual".into()])
    );
    let all: serde_json::Value = client
        .get(format!("{}/collections", q.http_url()))
        .header("api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(all.to_string().contains("\"orders\""), "{all}");
}
