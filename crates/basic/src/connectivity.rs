//! `basic.<name>.connectivity`: DNS, TCP connect and (for https) a TLS handshake.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, ErrorKind, Measurement, Outcome, Threshold,
};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;

use crate::classify::io_error;
use crate::config::{Endpoint, EndpointError, TargetConfig};

/// Reaches a target the way a client would: resolves its host, opens a TCP connection and, for
/// `https`, completes a TLS handshake against the public web PKI roots with the host as SNI.
///
/// Measures `dns_time`, `connect_time` (held to `<` [`ConnectivityCheck::connect_time_limit`],
/// default 200 ms as `performance_targets.latency_p95`) and `tls_handshake_time`, all in
/// milliseconds. Fails when any step fails, naming the target and
/// the address with a short reason (`connect to gateway at 127.0.0.1:5999: connection refused`).
/// Every step is bounded by the check's deadline.
#[derive(Debug, Clone)]
pub struct ConnectivityCheck {
    id: CheckId,
    name: String,
    endpoint: Result<Endpoint, EndpointError>,
    connect_time_limit: Duration,
    timeout: Option<Duration>,
}

impl ConnectivityCheck {
    /// The connectivity check of `target`: `connect_time` must stay below 200 ms (the default
    /// `performance_targets.latency_p95`) unless [`ConnectivityCheck::connect_time_limit`] says
    /// otherwise. Its timeout is the target's `timeout` (else the runner's default). It carries
    /// no retry policy: add [`retry_until_ready`](citadel_itest_core::CheckExt::retry_until_ready)
    /// when the service may still be starting. An unusable URL makes the check end in a harness
    /// error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use citadel_itest_basic::{ConnectivityCheck, TargetConfig};
    ///
    /// let target = TargetConfig::new("gateway", "http://127.0.0.1:58080");
    /// let check = ConnectivityCheck::new(&target).connect_time_limit(Duration::from_millis(50));
    /// ```
    pub fn new(target: &TargetConfig) -> Self {
        ConnectivityCheck {
            id: CheckId::new(format!("basic.{}.connectivity", target.name)),
            name: target.name.clone(),
            endpoint: Endpoint::parse(&target.url),
            connect_time_limit: DEFAULT_LIMIT,
            timeout: target.timeout,
        }
    }

    /// `connect_time` must stay below `limit` (default 200 ms; the tester uses
    /// `performance_targets.latency_p95`).
    pub fn connect_time_limit(mut self, limit: Duration) -> Self {
        self.connect_time_limit = limit;
        self
    }

    async fn probe(&self, ep: &Endpoint, deadline: Instant) -> Result<Outcome, BoxError> {
        let name = &self.name;
        let mut measurements = Vec::with_capacity(3);

        let started = Instant::now();
        let addrs: Vec<SocketAddr> = match timeout_at(
            deadline,
            tokio::net::lookup_host((ep.host.as_str(), ep.port)),
        )
        .await
        {
            Err(_) => return Ok(timed_out(format!("resolve {name} host {}", ep.host))),
            Ok(Err(e)) => {
                return Ok(Outcome::failed(format!(
                    "resolve {name} host {}: {}",
                    ep.host,
                    io_error(&e)
                )));
            }
            Ok(Ok(addrs)) => addrs.collect(),
        };
        measurements.push(Measurement::duration("dns_time", started.elapsed()));
        tracing::debug!(target = %name, host = %ep.host, ?addrs, "resolved");
        if addrs.is_empty() {
            return Ok(Outcome::Failed {
                message: format!("resolve {name} host {}: no addresses", ep.host),
                measurements,
            });
        }

        let started = Instant::now();
        let mut errors = Vec::new();
        let mut connected = None;
        for addr in &addrs {
            match timeout_at(deadline, TcpStream::connect(addr)).await {
                Err(_) => return Ok(timed_out(format!("connect to {name} at {addr}"))),
                Ok(Ok(stream)) => {
                    connected = Some((stream, *addr));
                    break;
                }
                Ok(Err(e)) => errors.push(format!("{addr}: {}", io_error(&e))),
            }
        }
        let connect_time = started.elapsed();
        let Some((stream, addr)) = connected else {
            return Ok(Outcome::Failed {
                message: format!("connect to {name} at {}", errors.join("; ")),
                measurements,
            });
        };
        tracing::debug!(target = %name, %addr, ?connect_time, "connected");
        measurements.push(
            Measurement::duration("connect_time", connect_time).with_threshold(Threshold::lt(
                self.connect_time_limit.as_secs_f64() * 1000.0,
            )),
        );

        if ep.is_tls() {
            let server_name = match ServerName::try_from(ep.host.clone()) {
                Ok(n) => n,
                Err(e) => {
                    return Ok(Outcome::Failed {
                        message: format!(
                            "tls handshake with {name} at {addr}: `{}` is not a valid server name: {e}",
                            ep.host
                        ),
                        measurements,
                    });
                }
            };
            let connector = TlsConnector::from(tls_config()?);
            let started = Instant::now();
            match timeout_at(deadline, connector.connect(server_name, stream)).await {
                Err(_) => return Ok(timed_out(format!("tls handshake with {name} at {addr}"))),
                Ok(Err(e)) => {
                    return Ok(Outcome::Failed {
                        message: format!("tls handshake with {name} at {addr}: {}", io_error(&e)),
                        measurements,
                    });
                }
                Ok(Ok(_tls)) => measurements.push(Measurement::duration(
                    "tls_handshake_time",
                    started.elapsed(),
                )),
            }
        }
        Ok(Outcome::from_measurements(measurements))
    }
}

/// The default limit of `connect_time` and `latency_p95`: the default
/// `performance_targets.latency_p95`.
pub(crate) const DEFAULT_LIMIT: Duration = Duration::from_millis(200);

/// The step did not finish before the check's deadline: the runner's kind of timeout, with the
/// step named.
pub(crate) fn timed_out(step: String) -> Outcome {
    Outcome::error(
        ErrorKind::Timeout,
        format!("{step}: timed out at the check's deadline"),
    )
}

/// Client TLS settings: ring, safe default versions, webpki roots; built once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, BoxError> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(c.clone());
    }
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
}

#[async_trait]
impl Check for ConnectivityCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        Category::Connectivity
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        let ep = self
            .endpoint
            .as_ref()
            .map_err(|e| format!("target {}: {e}", self.name))?;
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => {
                Ok(Outcome::error(ErrorKind::Cancelled, format!("connectivity of {} cancelled", self.name)))
            }
            outcome = self.probe(ep, ctx.deadline) => outcome,
        }
    }
}
