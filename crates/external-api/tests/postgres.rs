//! The PostgreSQL checks against a real PostgreSQL from the testkit: scram and trust auth, a
//! stopped server, a closed port, a listener that never answers, read-only mode and a run
//! cancelled in the middle of its write test.

mod common;

use std::time::{Duration, Instant};

use citadel_itest_core::config::Secret;
use citadel_itest_core::{Category, Check, ErrorKind, Outcome, Status, Threshold, Unit, run_one};
use citadel_itest_external_api::{
    Aspect, ExternalApiConfig, POSTGRES_TLS, PostgresCheck, PostgresTarget, SslMode,
};
use citadel_itest_testkit::{HangingListener, PgAuth, Postgres, closed_port};
use common::*;
use tokio_util::sync::CancellationToken;

fn target(pg: &Postgres) -> PostgresTarget {
    PostgresTarget::new("main_db")
        .host("127.0.0.1")
        .port(pg.port())
        .user(pg.user())
        .password(Secret::inline(pg.password()))
        .database("postgres")
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn all_six_checks_pass_against_a_real_postgres() {
    let pg = Postgres::start().await.expect("start postgres");
    // The DSN form, with the password in the DSN: it must never be printed.
    let t = PostgresTarget::new("main_db")
        .dsn(format!("{}?sslmode=prefer", pg.dsn()))
        .connect_timeout(Duration::from_secs(2));
    let tester = tester(ExternalApiConfig::new().postgres(t));
    let out = run(&tester, None).await;
    print_results(&out.results);
    assert_eq!(out.results.len(), 6);
    assert_all_passed(&out.results);
    assert_no_secret(&out.results, &[pg.password()]);

    let conf = result(&out.results, "external_api.main_db.configuration");
    assert_eq!(conf.category, Category::Configuration);
    assert_eq!(
        value(conf, "tls_available"),
        f64::from(u8::from(POSTGRES_TLS))
    );
    assert_eq!(value(conf, "pool_size"), 5.0);

    let conn = result(&out.results, "external_api.main_db.connectivity");
    let version = value(conn, "server_version_num");
    assert!((150_000.0..160_000.0).contains(&version), "{version}");
    assert_eq!(value(conn, "tls"), 0.0, "the testkit server has no TLS");
    assert!(value(conn, "handshake_time") > 0.0);

    let auth = result(&out.results, "external_api.main_db.authentication");
    assert_eq!(value(auth, "auth_enforced_checked"), 1.0);
    assert!(value(auth, "wrong_password_rejection_time") > 0.0);

    let ops = result(&out.results, "external_api.main_db.operations");
    assert_eq!(value(ops, "rows_verified"), 3.0);

    let perf = result(&out.results, "external_api.main_db.performance");
    print_latencies(perf);
    assert_eq!(value(perf, "samples"), 50.0);
    assert_eq!(value(perf, "connections"), 5.0);
    let p95 = perf.measurement("latency_p95").unwrap();
    assert_eq!(p95.unit, Unit::Milliseconds);
    assert_eq!(p95.threshold, Some(Threshold::lt(200.0)));
    assert!(value(perf, "latency_p50") <= value(perf, "latency_p95"));
    assert!(value(perf, "latency_p95") <= value(perf, "latency_p99"));

    let eh = result(&out.results, "external_api.main_db.error_handling");
    assert!(value(eh, "refused_time") < 1000.0);
    let silent = value(eh, "silent_timeout");
    assert!((2000.0..3000.0).contains(&silent), "{silent}");
    assert!(value(eh, "recovery_time") > 0.0);
    assert!(value(eh, "sql_error_time") > 0.0);

    // Nothing the checks wrote is left.
    assert_no_temp_tables(&pg).await;
}

#[tokio::test]
async fn authentication_fails_when_the_server_accepts_any_password() {
    let pg = Postgres::builder()
        .auth(PgAuth::Trust)
        .start()
        .await
        .expect("start postgres (trust)");
    let settings = settings();
    let check = PostgresCheck::new(&target(&pg), Aspect::Authentication, &settings);
    let result = run_one(&check).await;
    assert_eq!(
        result.outcome.status(),
        Status::Failed,
        "{:?}",
        result.outcome
    );
    assert_eq!(
        result.outcome.message(),
        Some(
            format!(
                "main_db at 127.0.0.1:{} let user citadel in with a wrong password: \
                 authentication is not enforced (pg_hba.conf trusts this connection)",
                pg.port()
            )
            .as_str()
        )
    );
    assert!(value(&result, "login_time") > 0.0);
    assert_no_secret(std::slice::from_ref(&result), &[pg.password()]);

    // Without require_auth the same server passes: the login works, enforcement is not asked.
    let lax = target(&pg).require_auth(false);
    let result = run_one(&PostgresCheck::new(&lax, Aspect::Authentication, &settings)).await;
    result.assert_passed();
    assert_eq!(value(&result, "auth_enforced_checked"), 0.0);
}

#[tokio::test]
async fn a_wrong_configured_password_fails_connectivity_and_authentication() {
    let pg = Postgres::start().await.expect("start postgres");
    let wrong = target(&pg).password(Secret::inline("not-the-password-9931"));
    let settings = settings().retry(citadel_itest_core::RetryPolicy::new(0, Duration::ZERO));
    for aspect in [Aspect::Connectivity, Aspect::Authentication] {
        let result = run_one(&PostgresCheck::new(&wrong, aspect, &settings)).await;
        assert_eq!(
            result.outcome.status(),
            Status::Failed,
            "{:?}",
            result.outcome
        );
        let message = result.outcome.message().unwrap();
        assert!(
            message
                .contains("password authentication failed for user \"citadel\" (SQLSTATE 28P01)"),
            "{message}"
        );
        assert_no_secret(
            std::slice::from_ref(&result),
            &["not-the-password-9931", pg.password()],
        );
    }
}

#[tokio::test]
async fn a_stopped_server_a_closed_port_and_a_silent_listener_fail_within_their_bounds() {
    let mut pg = Postgres::start().await.expect("start postgres");
    pg.stop().await.expect("stop postgres");
    let silent = HangingListener::start().await.expect("hanging listener");
    let closed = closed_port().expect("closed port");
    let settings = settings()
        .retry(citadel_itest_core::RetryPolicy::new(0, Duration::ZERO))
        .timeout(Duration::from_secs(10));
    let bound = Duration::from_secs(2);

    for (port, why) in [
        (pg.port(), "connection refused"),
        (closed, "connection refused"),
        (silent.port(), "no answer within 2s (connect_timeout)"),
    ] {
        let t = target(&pg).port(port);
        let addr = format!("127.0.0.1:{port}");
        for aspect in [Aspect::Connectivity, Aspect::ErrorHandling] {
            let started = Instant::now();
            let result = run_one(&PostgresCheck::new(&t, aspect, &settings)).await;
            let took = started.elapsed();
            assert_eq!(
                result.outcome.status(),
                Status::Failed,
                "{:?}",
                result.outcome
            );
            let message = result.outcome.message().unwrap();
            let expected = match (aspect, why) {
                (Aspect::Connectivity, "connection refused") => {
                    format!("connect to main_db at {addr}: connection refused")
                }
                (Aspect::Connectivity, _) => format!("connect to main_db at {addr}: {why}"),
                _ => format!("recover: connect to main_db at {addr}: {why}"),
            };
            // A silent listener accepts TCP, so connectivity fails in the handshake.
            assert_eq!(message, expected, "{aspect} against {addr}");
            // Fault probes (~2s for the silent one) plus the real attempt (bounded by 2s).
            let limit = match aspect {
                Aspect::Connectivity => bound + Duration::from_secs(1),
                _ => 2 * bound + Duration::from_secs(1),
            };
            assert!(took < limit, "{aspect} against {addr} took {took:?}");
            if aspect == Aspect::ErrorHandling {
                // The fault probes passed before the real server was found missing.
                assert!(value(&result, "refused_time") < 1000.0);
                assert!(value(&result, "silent_timeout") >= 2000.0);
            }
            eprintln!("{aspect} against {addr}: {message} ({took:?})");
            assert_no_secret(std::slice::from_ref(&result), &[pg.password()]);
        }
    }
}

#[tokio::test]
async fn read_only_mode_runs_selects_only_and_says_so() {
    let pg = Postgres::start().await.expect("start postgres");
    let settings = settings().read_only(true);
    let result = run_one(&PostgresCheck::new(
        &target(&pg),
        Aspect::Operations,
        &settings,
    ))
    .await;
    assert_eq!(
        result.outcome.status(),
        Status::Skipped,
        "{:?}",
        result.outcome
    );
    let reason = result.outcome.message().unwrap();
    assert!(
        reason.starts_with("read-only mode (run.read_only: true): the write test on main_db"),
        "{reason}"
    );
    assert!(
        reason.contains("read-only SELECTs in a READ ONLY transaction passed"),
        "{reason}"
    );
    // Reads are not writes: the other checks still run in read-only mode.
    for aspect in [
        Aspect::Performance,
        Aspect::ErrorHandling,
        Aspect::Authentication,
    ] {
        run_one(&PostgresCheck::new(&target(&pg), aspect, &settings))
            .await
            .assert_passed();
    }
}

#[tokio::test]
async fn sslmode_require_is_enforced_by_the_client() {
    let pg = Postgres::start().await.expect("start postgres");
    let settings = settings().retry(citadel_itest_core::RetryPolicy::new(0, Duration::ZERO));
    let t = target(&pg).sslmode(SslMode::Require);
    let conf = run_one(&PostgresCheck::new(&t, Aspect::Configuration, &settings)).await;
    if POSTGRES_TLS {
        // This build has TLS: the configuration says so and passes.
        conf.assert_passed();
        assert_eq!(value(&conf, "tls_required"), 1.0);
        assert_eq!(value(&conf, "tls_available"), 1.0);
    } else {
        assert_eq!(conf.outcome.status(), Status::Failed);
        assert_eq!(
            conf.outcome.message().unwrap(),
            "postgres main_db: sslmode require requires TLS, but this build has no PostgreSQL \
             TLS (cargo feature `postgres-tls` of citadel-itest-external-api)"
        );
    }
    // The testkit server has no TLS, so a required TLS session cannot be had.
    let conn = run_one(&PostgresCheck::new(&t, Aspect::Connectivity, &settings)).await;
    assert_eq!(conn.outcome.status(), Status::Failed, "{:?}", conn.outcome);
    let message = conn.outcome.message().unwrap();
    assert!(
        message.starts_with(&format!("connect to main_db at 127.0.0.1:{}: ", pg.port())),
        "{message}"
    );
    assert!(message.to_lowercase().contains("tls"), "{message}");
}

#[tokio::test]
async fn configuration_problems_are_reported_by_the_check() {
    let settings = settings();
    let t = PostgresTarget::new("main_db")
        .dsn("postgres://citadel@127.0.0.1:1/citadel?sslmode=bogus")
        .pool_size(0)
        .connect_timeout(Duration::ZERO);
    let result = run_one(&PostgresCheck::new(&t, Aspect::Configuration, &settings)).await;
    assert_eq!(result.outcome.status(), Status::Failed);
    assert_eq!(
        result.outcome.message().unwrap(),
        "postgres main_db is misconfigured: dsn: DSN `postgres://citadel@127.0.0.1:1/citadel?sslmode=bogus`: \
         sslmode `bogus` is not one of disable, allow, prefer, require, verify-ca, verify-full; \
         password: required when require_auth is true: give `password` or a password in the DSN; \
         pool_size: 0 is out of range 1..=100; \
         connect_timeout: 0s is out of range (greater than 0s, at most 10m)"
    );
    // The other checks cannot evaluate such a target: a harness error, not a verdict.
    let result = run_one(&PostgresCheck::new(&t, Aspect::Connectivity, &settings)).await;
    assert!(matches!(
        result.outcome,
        Outcome::Error {
            kind: ErrorKind::Harness,
            ..
        }
    ));
    assert!(
        result
            .outcome
            .message()
            .unwrap()
            .starts_with("cannot check postgres main_db: it is misconfigured: dsn: ")
    );
}

#[tokio::test]
async fn a_run_cancelled_during_operations_leaves_no_table() {
    let pg = Postgres::start().await.expect("start postgres");
    // A slow link: each chunk waits 150ms each way, so the write test takes seconds.
    let proxy = DelayProxy::start(
        format!("127.0.0.1:{}", pg.port()).parse().unwrap(),
        Duration::from_millis(150),
    )
    .await;
    let t = target(&pg)
        .port(proxy.port())
        .sslmode(SslMode::Disable)
        .connect_timeout(Duration::from_secs(10))
        .request_timeout(Duration::from_secs(10));
    let tester = tester(ExternalApiConfig::new().postgres(t));
    let cancel = CancellationToken::new();

    // Fire the suite's token as soon as the temporary table exists in the check's session.
    let watcher = {
        let cancel = cancel.clone();
        let pg_port = pg.port();
        let user = pg.user().to_string();
        let password = pg.password().to_string();
        tokio::spawn(async move {
            let sql = "SELECT count(*) FROM pg_catalog.pg_stat_activity \
                       WHERE pid <> pg_backend_pid() AND application_name = 'citadel-itest' \
                       AND query LIKE 'INSERT INTO \"citadel\\_itest\\_%'";
            for _ in 0..300 {
                let out = tokio::process::Command::new("psql")
                    .args([
                        "-X",
                        "-w",
                        "-At",
                        "-h",
                        "127.0.0.1",
                        "-U",
                        &user,
                        "-d",
                        "postgres",
                    ])
                    .arg("-p")
                    .arg(pg_port.to_string())
                    .arg("-c")
                    .arg(sql)
                    .env("PGPASSWORD", &password)
                    .output()
                    .await
                    .expect("psql");
                if String::from_utf8_lossy(&out.stdout).trim() != "0" {
                    cancel.cancel();
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        })
    };
    let started = Instant::now();
    let out = run(&tester, Some(cancel.clone())).await;
    assert!(
        watcher.await.unwrap(),
        "the write test was never seen in progress"
    );
    print_results(&out.results);
    assert!(out.summary.interrupted);
    let ops = result(&out.results, "external_api.main_db.operations");
    assert!(
        matches!(
            ops.outcome,
            Outcome::Error {
                kind: ErrorKind::Cancelled,
                ..
            }
        ),
        "{:?}",
        ops.outcome
    );
    // The check noticed the cancellation, rolled back and closed its session within the
    // grace, and its own message (what it cleaned up) is the one reported.
    let message = ops.outcome.message().unwrap_or_default();
    assert!(
        message.starts_with("operations on main_db cancelled: the transaction was rolled back"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    drop(proxy);
    assert_no_temp_tables(&pg).await;
    assert_no_secret(&out.results, &[pg.password()]);
}

#[tokio::test]
async fn check_ids_and_categories() {
    let settings = settings();
    let t = PostgresTarget::new("main_db")
        .host("127.0.0.1")
        .user("u")
        .require_auth(false);
    for aspect in Aspect::ALL {
        let c = PostgresCheck::new(&t, aspect, &settings);
        assert_eq!(
            c.id().as_str(),
            format!("external_api.main_db.{}", aspect.category())
        );
        assert_eq!(c.category(), aspect.category());
        assert_eq!(c.timeout(), Some(settings.timeout));
    }
}

/// A testkit server with TLS (a throwaway CA and a certificate for 127.0.0.1).
#[cfg(feature = "postgres-tls")]
async fn tls_postgres() -> Postgres {
    let started = Instant::now();
    let pg = Postgres::builder()
        .tls(true)
        .start()
        .await
        .expect("start postgres (tls)");
    eprintln!("postgres (tls) started in {:?}", started.elapsed());
    pg
}

#[cfg(feature = "postgres-tls")]
#[tokio::test]
async fn all_six_checks_pass_over_tls_with_sslmode_require() {
    let pg = tls_postgres().await;
    let t = target(&pg).sslmode(SslMode::Require);
    let tester = tester(ExternalApiConfig::new().postgres(t));
    let out = run(&tester, None).await;
    print_results(&out.results);
    assert_eq!(out.results.len(), 6);
    assert_all_passed(&out.results);
    assert_no_secret(&out.results, &[pg.password()]);

    let conf = result(&out.results, "external_api.main_db.configuration");
    assert_eq!(value(conf, "tls_required"), 1.0);
    assert_eq!(value(conf, "tls_available"), 1.0);
    let conn = result(&out.results, "external_api.main_db.connectivity");
    assert_eq!(value(conn, "tls"), 1.0, "the session uses TLS");
    print_latencies(result(&out.results, "external_api.main_db.performance"));
    assert_no_temp_tables(&pg).await;
}

#[cfg(feature = "postgres-tls")]
#[tokio::test]
async fn sslmode_verify_full_and_verify_ca_pass_with_the_servers_ca() {
    let pg = tls_postgres().await;
    let ca = pg
        .ca_cert_path()
        .expect("the TLS server's CA")
        .to_path_buf();
    let settings = settings().retry(citadel_itest_core::RetryPolicy::new(0, Duration::ZERO));

    // As builder fields, and as DSN parameters.
    let mut by_parts = target(&pg).sslmode(SslMode::VerifyFull);
    by_parts.sslrootcert = Some(ca.clone());
    let by_dsn = PostgresTarget::new("main_db")
        .dsn(format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            pg.dsn(),
            ca.display()
        ))
        .connect_timeout(Duration::from_secs(2));
    let mut chain_only = target(&pg).sslmode(SslMode::VerifyCa);
    chain_only.sslrootcert = Some(ca.clone());
    for t in [by_parts, by_dsn, chain_only] {
        let conf = run_one(&PostgresCheck::new(&t, Aspect::Configuration, &settings)).await;
        conf.assert_passed();
        let conn = run_one(&PostgresCheck::new(&t, Aspect::Connectivity, &settings)).await;
        conn.assert_passed();
        assert_eq!(value(&conn, "tls"), 1.0);
        assert_no_secret(&[conf, conn], &[pg.password()]);
    }
}

#[cfg(feature = "postgres-tls")]
#[tokio::test]
async fn sslmode_verify_full_without_sslrootcert_fails_on_the_certificate() {
    let pg = tls_postgres().await;
    let settings = settings().retry(citadel_itest_core::RetryPolicy::new(0, Duration::ZERO));
    // No sslrootcert: the webpki roots, which never signed the testkit's throwaway CA.
    let t = target(&pg).sslmode(SslMode::VerifyFull);
    let started = Instant::now();
    let conn = run_one(&PostgresCheck::new(&t, Aspect::Connectivity, &settings)).await;
    assert_eq!(conn.outcome.status(), Status::Failed, "{:?}", conn.outcome);
    let message = conn.outcome.message().unwrap();
    eprintln!("{message} ({:?})", started.elapsed());
    assert!(
        message.starts_with(&format!("connect to main_db at 127.0.0.1:{}: ", pg.port())),
        "{message}"
    );
    // rustls's words: `invalid peer certificate: UnknownIssuer`.
    assert!(message.contains("invalid peer certificate"), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert_no_secret(std::slice::from_ref(&conn), &[pg.password()]);
}

#[cfg(feature = "postgres-tls")]
#[tokio::test]
async fn a_server_that_insists_on_tls_gets_it_with_sslmode_allow_and_refuses_disable() {
    let started = Instant::now();
    let pg = Postgres::builder()
        .require_tls(true)
        .start()
        .await
        .expect("start postgres (require_tls)");
    eprintln!("postgres (require_tls) started in {:?}", started.elapsed());

    // libpq's `allow`: plain first, TLS once the server refuses the plain session.
    let t = target(&pg).sslmode(SslMode::Allow);
    let tester = tester(ExternalApiConfig::new().postgres(t));
    let out = run(&tester, None).await;
    print_results(&out.results);
    assert_eq!(out.results.len(), 6);
    assert_all_passed(&out.results);
    let conn = result(&out.results, "external_api.main_db.connectivity");
    assert_eq!(value(conn, "tls"), 1.0);
    let auth = result(&out.results, "external_api.main_db.authentication");
    assert_eq!(value(auth, "auth_enforced_checked"), 1.0);
    assert_no_secret(&out.results, &[pg.password()]);

    // `disable` never gets in, and the server's reason is reported.
    let settings = settings().retry(citadel_itest_core::RetryPolicy::new(0, Duration::ZERO));
    let t = target(&pg).sslmode(SslMode::Disable);
    let conn = run_one(&PostgresCheck::new(&t, Aspect::Connectivity, &settings)).await;
    assert_eq!(conn.outcome.status(), Status::Failed, "{:?}", conn.outcome);
    let message = conn.outcome.message().unwrap();
    assert!(
        message.contains("no pg_hba.conf entry") && message.contains("no encryption"),
        "{message}"
    );
    assert!(message.ends_with("(SQLSTATE 28000)"), "{message}");
    assert_no_secret(std::slice::from_ref(&conn), &[pg.password()]);
}
