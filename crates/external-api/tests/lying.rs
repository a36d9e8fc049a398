//! The external-API checks against servers that lie: HTML where Prometheus's or Qdrant's
//! health text belongs, malformed JSON listings and query results, bodies that never end or
//! stop half-way, an auth-enforcing server reached with credentials in the URL, and a
//! PostgreSQL session that stops answering when the run is cancelled. No lie gets Passed, every
//! check ends within its budget plus a second, and a cancelled check returns within a second.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use citadel_itest_core::config::Secret;
use citadel_itest_core::{ErrorKind, Outcome, Status, Suite, TestResult, run_one};
use citadel_itest_external_api::{
    Aspect, ExternalApiConfig, PostgresCheck, PostgresTarget, PrometheusCheck, PrometheusTarget,
    QdrantCheck, QdrantTarget, SslMode,
};
use citadel_itest_testkit::lying::{LyingServer, Reply, Request};
use citadel_itest_testkit::{HangingListener, Postgres, QdrantServer, closed_port};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Each check's budget in these tests.
const BUDGET: Duration = Duration::from_secs(5);

const LOGIN_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n\
                          <body><form action=\"/login\">...</form></body></html>\n";

// ---------------------------------------------------------------- Prometheus

const BUILDINFO: &str = r#"{"status":"success","data":{"version":"2.42.0+ds","revision":"x","branch":"debian/sid","buildUser":"u","buildDate":"d","goVersion":"go1.19"}}"#;
const VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","instance":"127.0.0.1:9","job":"dead"},"value":[1700000000.123,"0"]}]}}"#;
const MATRIX: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"dead"},"values":[[1700000000,"0"],[1700000015,"0"]]}]}}"#;
const TARGETS: &str = r#"{"status":"success","data":{"activeTargets":[{"labels":{"job":"dead"},"scrapeUrl":"http://127.0.0.1:9/metrics","health":"down"}],"droppedTargets":[]}}"#;
const RULES: &str = r#"{"status":"success","data":{"groups":[{"name":"g","file":"rules.yml","rules":[{"name":"job:up:sum","query":"sum(up)","health":"ok","type":"recording"},{"name":"TargetDown","query":"up == 0","health":"ok","type":"alerting","state":"firing"}]}]}}"#;
const BAD_DATA: &str = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:4: parse error: unexpected end of input"}"#;

/// What a real Prometheus 2.42 answers on the endpoints the checks use.
fn prometheus(req: &Request) -> Reply {
    match req.path() {
        "/-/healthy" => Reply::text(200, "Prometheus Server is Healthy.\n"),
        "/-/ready" => Reply::text(200, "Prometheus Server is Ready.\n"),
        "/api/v1/status/buildinfo" => Reply::json(200, BUILDINFO),
        "/api/v1/query" if req.target.contains("up%7B") || req.target.contains("up{") => {
            Reply::json(400, BAD_DATA)
        }
        "/api/v1/query" => Reply::json(200, VECTOR),
        "/api/v1/query_range" => Reply::json(200, MATRIX),
        "/api/v1/targets" => Reply::json(200, TARGETS),
        "/api/v1/rules" => Reply::json(200, RULES),
        _ => Reply::text(404, "404 page not found\n"),
    }
}

fn prom_target(url: String) -> PrometheusTarget {
    PrometheusTarget::new("metrics", url)
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(1))
        .timeout(BUDGET)
}

/// Run one aspect of `target`, asserting it ends within its budget plus a second.
async fn prom(target: &PrometheusTarget, aspect: Aspect) -> TestResult {
    bounded(PrometheusCheck::new(target, aspect, &settings())).await
}

async fn bounded(check: impl citadel_itest_core::Check) -> TestResult {
    let started = Instant::now();
    let r = run_one(&check).await;
    let elapsed = started.elapsed();
    eprintln!(
        "{} {} after {elapsed:?}: {}",
        r.id,
        r.outcome.status(),
        r.outcome.message().unwrap_or_default()
    );
    assert!(
        elapsed < BUDGET + Duration::from_secs(1),
        "{} took {elapsed:?}",
        r.id
    );
    r
}

fn failed(r: &TestResult) -> &str {
    match &r.outcome {
        Outcome::Failed { message, .. } => message,
        other => panic!("{}: expected Failed, got {other:?}", r.id),
    }
}

#[tokio::test]
async fn a_server_answering_like_prometheus_passes() {
    // The mimic is right, so the failures below come from the lies alone.
    let server = LyingServer::start(prometheus).await;
    let tester = tester(ExternalApiConfig::new().prometheus(prom_target(server.url())));
    let out = run(&tester, None).await;
    print_results(&out.results);
    for r in &out.results {
        if r.id.as_str() == "external_api.metrics.authentication" {
            assert_eq!(r.outcome.status(), Status::Skipped);
        } else {
            r.assert_passed();
        }
    }
}

#[tokio::test]
async fn an_html_login_page_on_healthy_or_ready_fails_naming_it() {
    for path in ["/-/healthy", "/-/ready"] {
        let server = LyingServer::start(move |req| {
            if req.path() == path {
                Reply::html(LOGIN_PAGE)
            } else {
                prometheus(req)
            }
        })
        .await;
        let tester = tester(ExternalApiConfig::new().prometheus(prom_target(server.url())));
        let started = Instant::now();
        let out = run(&tester, None).await;
        print_results(&out.results);
        assert!(started.elapsed() < 2 * BUDGET);
        let conn = result(&out.results, "external_api.metrics.connectivity");
        let expected = if path == "/-/healthy" {
            "Prometheus Server is Healthy."
        } else {
            "Prometheus Server is Ready."
        };
        assert_eq!(
            failed(conn),
            format!(
                "GET {}{path}: HTTP 200 with \"<!DOCTYPE html> <html><head><title>Sign \
                 in</title></head> <body><form action=\"/login\">...</form></body></html>\", \
                 expected HTTP 200 with \"{expected}\"",
                server.url()
            )
        );
        // The run as a whole does not pass: the exit code would be 1.
        assert!(out.summary.counts.failed >= 1, "{:?}", out.summary.counts);
        if path == "/-/ready" {
            let eh = result(&out.results, "external_api.metrics.error_handling");
            assert!(failed(eh).starts_with("recover: GET "), "{:?}", eh.outcome);
        }
    }
}

#[tokio::test]
async fn malformed_api_answers_fail_naming_the_field() {
    let cases: [(&str, &str, Aspect, &str); 8] = [
        (
            "/api/v1/status/buildinfo",
            r#"{"status":"success","data":{}}"#,
            Aspect::Connectivity,
            "`data.version` is missing",
        ),
        (
            "/api/v1/status/buildinfo",
            r#"{"status":"success","data":{"version":"latest"}}"#,
            Aspect::Connectivity,
            "`data.version` is \"latest\", not a version number",
        ),
        (
            "/api/v1/query",
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"up"]}]}}"#,
            Aspect::Operations,
            "`data.result[0].value[1]` is \"up\", not a sample value",
        ),
        (
            "/api/v1/query",
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            Aspect::Operations,
            "`data.resultType`: unknown variant `matrix`, expected `vector`",
        ),
        (
            "/api/v1/query",
            r#"{"status":"success"}"#,
            Aspect::Operations,
            "`data` is missing",
        ),
        (
            "/api/v1/targets",
            r#"{"status":"success","data":{"activeTargets":[{"labels":{}}]}}"#,
            Aspect::Operations,
            "`data.activeTargets[0].health` is missing",
        ),
        (
            "/api/v1/rules",
            r#"{"status":"failure","data":{"groups":[]}}"#,
            Aspect::Operations,
            "`status`: unknown variant `failure`, expected `success`",
        ),
        (
            "/api/v1/query",
            LOGIN_PAGE,
            Aspect::Performance,
            "is not an API answer with an instant vector: not JSON",
        ),
    ];
    for (path, body, aspect, expected) in cases {
        let server = LyingServer::start(move |req| {
            if req.path() == path {
                Reply::json(200, body)
            } else {
                prometheus(req)
            }
        })
        .await;
        let r = prom(&prom_target(server.url()), aspect).await;
        let message = failed(&r);
        assert!(message.contains(expected), "{path}: {message}");
        assert!(
            message.starts_with(&format!("GET {}", server.url()))
                || message.starts_with("query 1 of"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn endless_50_mb_and_stalled_query_answers_fail_on_their_bounds() {
    for (reply, expected) in [
        (Reply::Endless, "HTTP 200: body over 4 MiB".to_string()),
        (
            Reply::Chunked(50 * 1024 * 1024),
            "HTTP 200: body over 4 MiB".to_string(),
        ),
        (
            Reply::Stalled,
            "HTTP 200: body not finished within 1s (16 bytes received) (request_timeout)"
                .to_string(),
        ),
    ] {
        let server = LyingServer::start(move |req| {
            if req.path() == "/api/v1/query" {
                reply.clone()
            } else {
                prometheus(req)
            }
        })
        .await;
        let target = prom_target(server.url());
        let r = prom(&target, Aspect::Operations).await;
        assert_eq!(
            failed(&r),
            format!("GET {}/api/v1/query?query=up: {expected}", server.url())
        );
        assert!(!failed(&r).contains("no answer"));
        let r = prom(&target, Aspect::Performance).await;
        assert!(failed(&r).ends_with(&expected), "{:?}", r.outcome);
    }
}

#[tokio::test]
async fn the_probe_without_credentials_sends_none_when_they_are_in_the_url() {
    const USER: &str = "itest";
    const PASSWORD: &str = "url-p@ss-4711";
    // base64("itest:url-p@ss-4711")
    const HEADER: &str = "Basic aXRlc3Q6dXJsLXBAc3MtNDcxMQ==";
    let server = LyingServer::start(|req| {
        if req.header("authorization") == Some(HEADER) {
            prometheus(req)
        } else {
            Reply::text(401, "Unauthorized\n")
        }
    })
    .await;
    let url = format!("http://{USER}:url-p%40ss-4711@127.0.0.1:{}", server.port());
    let r = prom(&prom_target(url), Aspect::Authentication).await;
    assert!(
        !r.outcome
            .message()
            .unwrap_or_default()
            .contains("not required"),
        "{:?}",
        r.outcome
    );
    r.assert_passed();
    assert!(value(&r, "rejected_without_time") > 0.0);
    assert!(value(&r, "rejected_wrong_time") > 0.0);
    let requests = server.requests();
    assert!(
        requests.iter().any(|q| q.header("authorization").is_none()),
        "no request went out without credentials: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .filter_map(|q| q.header("authorization"))
            .any(|h| h != HEADER),
        "no request carried wrong credentials"
    );
    assert_no_secret(std::slice::from_ref(&r), &[PASSWORD, "url-p%40ss-4711"]);

    // The same credentials at a server that lets everyone in: not enforced, a failure.
    let open = LyingServer::start(prometheus).await;
    let url = format!("http://{USER}:url-p%40ss-4711@127.0.0.1:{}", open.port());
    let r = prom(&prom_target(url), Aspect::Authentication).await;
    assert!(
        failed(&r).ends_with("without credentials answered 200: authentication is not enforced"),
        "{:?}",
        r.outcome
    );
}

// ---------------------------------------------------------------- Qdrant

const KEY: &str = "qdrant-lying-key-1357";

fn qdrant_target(grpc_url: String, rest_url: String) -> QdrantTarget {
    QdrantTarget::new("vectors", grpc_url, rest_url)
        .api_key(Secret::inline(KEY))
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(1))
        .timeout(BUDGET)
}

async fn qdrant(target: &QdrantTarget, aspect: Aspect) -> TestResult {
    bounded(QdrantCheck::new(target, aspect, &settings())).await
}

/// What a real Qdrant 1.18.3 answers on the REST endpoints the checks use (see
/// shared/reference/qdrant-1.18.3-wire-production.txt).
fn qdrant_rest(req: &Request) -> Reply {
    match req.path() {
        "/readyz" => Reply::text(200, "all shards are ready"),
        "/healthz" | "/livez" => Reply::text(200, "healthz check passed"),
        "/" => Reply::json(
            200,
            r#"{"title":"qdrant - vector search engine","version":"1.18.3"}"#,
        ),
        "/collections" => Reply::json(
            200,
            r#"{"result":{"collections":[]},"status":"ok","time":0.0001}"#,
        ),
        _ => Reply::Full(404, "text/plain", Vec::new()),
    }
}

#[tokio::test]
async fn an_html_maintenance_page_on_readyz_fails_naming_it() {
    let server = LyingServer::start(|req| {
        if req.path() == "/readyz" {
            Reply::html("<html><body><h1>Down for maintenance</h1></body></html>")
        } else {
            qdrant_rest(req)
        }
    })
    .await;
    let grpc = format!("http://127.0.0.1:{}", closed_port().unwrap());
    let r = qdrant(&qdrant_target(grpc, server.url()), Aspect::Connectivity).await;
    assert_eq!(
        failed(&r),
        format!(
            "GET {}/readyz: HTTP 200 with \"<html><body><h1>Down for \
             maintenance</h1></body></html>\", expected HTTP 200 with \"all shards are ready\"",
            server.url()
        )
    );

    // An endless body on `/` (the version): the cap, not a hang.
    let server = LyingServer::start(|req| {
        if req.path() == "/" {
            Reply::Endless
        } else {
            qdrant_rest(req)
        }
    })
    .await;
    let grpc = format!("http://127.0.0.1:{}", closed_port().unwrap());
    let r = qdrant(&qdrant_target(grpc, server.url()), Aspect::Connectivity).await;
    assert_eq!(
        failed(&r),
        format!("GET {}/: HTTP 200: body over 4 MiB", server.url())
    );
}

#[tokio::test]
async fn a_malformed_collection_listing_does_not_pass_authentication() {
    // Real gRPC from the fixture (it holds the key), REST from the liar.
    let fixture = QdrantServer::builder()
        .api_key(KEY)
        .start()
        .await
        .expect("start the qdrant fixture");
    let cases = [
        (
            r#"{"collections":[{"nam":3}]}"#,
            "is not a collection listing: `result` is missing",
        ),
        (
            r#"{"result":{"collections":[{"nam":3}]},"status":"ok","time":0.001}"#,
            "is not a collection listing: `result.collections[0].name` is missing",
        ),
        (
            r#"{"result":{"collections":[]},"status":"error","time":0.001}"#,
            "is not a collection listing: `status`: unknown variant `error`, expected `ok`",
        ),
        (
            r#"{"result":{"collections":[]},"status":"ok"}"#,
            "is not a collection listing: `time` is missing",
        ),
    ];
    for (listing, expected) in cases {
        let server = LyingServer::start(move |req| {
            if req.path() == "/collections" {
                Reply::json(200, listing)
            } else {
                qdrant_rest(req)
            }
        })
        .await;
        let target = qdrant_target(fixture.grpc_url(), server.url());
        let r = qdrant(&target, Aspect::Authentication).await;
        let message = failed(&r);
        assert!(
            message.starts_with(&format!(
                "GET {}/collections: HTTP 200 {expected}",
                server.url()
            )),
            "{message}"
        );
        assert_no_secret(std::slice::from_ref(&r), &[KEY]);
    }

    // Without a key anywhere: a malformed listing is not "authentication not required".
    let open = QdrantServer::start()
        .await
        .expect("start the qdrant fixture");
    let server = LyingServer::start(|req| {
        if req.path() == "/collections" {
            Reply::json(200, r#"{"collections":[{"nam":3}]}"#)
        } else {
            qdrant_rest(req)
        }
    })
    .await;
    let target = QdrantTarget::new("vectors", open.grpc_url(), server.url())
        .require_api_key(false)
        .request_timeout(Duration::from_secs(1))
        .timeout(BUDGET);
    let r = qdrant(&target, Aspect::Authentication).await;
    assert!(
        failed(&r).contains("is not a collection listing: `result` is missing"),
        "{:?}",
        r.outcome
    );
}

#[tokio::test]
async fn a_malformed_point_count_fails_operations_naming_the_field() {
    let fixture = QdrantServer::builder()
        .api_key(KEY)
        .start()
        .await
        .expect("start the qdrant fixture");
    let server = LyingServer::start(|req| {
        if req.path().ends_with("/points/count") {
            Reply::json(
                200,
                r#"{"result":{"counted":16},"status":"ok","time":0.001}"#,
            )
        } else {
            qdrant_rest(req)
        }
    })
    .await;
    let target = qdrant_target(fixture.grpc_url(), server.url());
    let r = qdrant(&target, Aspect::Operations).await;
    let message = failed(&r);
    assert!(
        message.contains("/points/count: HTTP 200 is not a point count: `result.count` is missing"),
        "{message}"
    );
}

// ---------------------------------------------------------------- PostgreSQL

/// A TCP proxy to `target` that, once the client sends `trigger`, fires `cancel` and stops
/// passing the server's answers on (the client's own bytes still go through): a server that
/// stops answering at the moment the run is cancelled.
struct FreezingProxy {
    port: u16,
    fired: Arc<std::sync::Mutex<Option<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezingProxy {
    async fn start(target: u16, trigger: &'static [u8], cancel: CancellationToken) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fired = Arc::new(std::sync::Mutex::new(None));
        let frozen = Arc::new(AtomicBool::new(false));
        let task = {
            let fired = fired.clone();
            tokio::spawn(async move {
                let mut conns = tokio::task::JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        continue;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let (frozen_up, fired, cancel) =
                        (frozen.clone(), fired.clone(), cancel.clone());
                    conns.spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            if !frozen_up.load(Ordering::SeqCst)
                                && buf[..n].windows(trigger.len()).any(|w| w == trigger)
                            {
                                frozen_up.store(true, Ordering::SeqCst);
                                *fired.lock().unwrap() = Some(Instant::now());
                                cancel.cancel();
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = sw.shutdown().await;
                    });
                    let frozen_down = frozen.clone();
                    conns.spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n) = sr.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            if frozen_down.load(Ordering::SeqCst) {
                                continue;
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            })
        };
        FreezingProxy { port, fired, task }
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pg_target(pg: &Postgres, port: u16) -> PostgresTarget {
    PostgresTarget::new("main_db")
        .host("127.0.0.1")
        .port(port)
        .user(pg.user())
        .password(Secret::inline(pg.password()))
        .database("postgres")
        .sslmode(SslMode::Disable)
        .connect_timeout(Duration::from_secs(10))
        .request_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
}

/// Run the operations check of `target` in a suite with a 5 s cancel grace and `cancel`.
async fn run_operations(target: &PostgresTarget, cancel: CancellationToken) -> TestResult {
    let check = PostgresCheck::new(target, Aspect::Operations, &settings());
    let mut out = Suite::builder()
        .check("external_api", Arc::new(check))
        .cancel_grace(Duration::from_secs(5))
        .cancellation(cancel)
        .build()
        .run(Vec::new())
        .await;
    out.results.remove(0)
}

fn assert_cancelled(r: &TestResult, starts: &str) {
    match &r.outcome {
        Outcome::Error {
            kind: ErrorKind::Cancelled,
            message,
        } => assert!(message.starts_with(starts), "{message}"),
        other => panic!("expected a cancellation, got {other:?}"),
    }
}

#[tokio::test]
async fn postgres_operations_returns_within_a_second_of_cancellation() {
    let pg = Postgres::start().await.expect("start postgres");

    // Cancelled in the middle of its write test while the server has stopped answering.
    let cancel = CancellationToken::new();
    let proxy = FreezingProxy::start(pg.port(), b"INSERT INTO", cancel.clone()).await;
    let r = run_operations(&pg_target(&pg, proxy.port), cancel).await;
    let fired = proxy
        .fired
        .lock()
        .unwrap()
        .expect("the write test was never seen");
    let after = fired.elapsed();
    eprintln!(
        "cancelled mid-write: returned {after:?} after the cancel: {:?}",
        r.outcome
    );
    assert!(
        after < Duration::from_millis(1200),
        "returned {after:?} after the cancel"
    );
    assert_cancelled(&r, "operations on main_db cancelled: ");
    drop(proxy);
    assert_no_temp_tables(&pg).await;

    // Cancelled while connecting to a server that never answers.
    let hanging = HangingListener::start().await.expect("hanging listener");
    let cancel = CancellationToken::new();
    let trigger = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel();
            Instant::now()
        })
    };
    let r = run_operations(&pg_target(&pg, hanging.port()), cancel).await;
    let after = trigger.await.unwrap().elapsed();
    eprintln!("cancelled while connecting: returned {after:?} after the cancel");
    assert!(
        after < Duration::from_millis(1200),
        "returned {after:?} after the cancel"
    );
    assert_cancelled(&r, "operations on main_db cancelled while connecting");
}
