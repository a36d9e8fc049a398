//! Launchers for real local services, for tests: like testcontainers, but for the Debian
//! binaries installed on the machine. Each launcher finds a free port on 127.0.0.1, works in
//! its own temp dir, waits (bounded) until the service is ready and returns a handle with URLs
//! and credentials; dropping the handle stops the service and deletes the dir.
//!
//! ```no_run
//! use citadel_itest_testkit::{Nginx, PgAuth, Postgres, Prometheus, TestkitError};
//!
//! # async fn example() -> Result<(), TestkitError> {
//! let pg = Postgres::builder().auth(PgAuth::Scram).start().await?;
//! let dsn = pg.create_database("orders").await?; // postgres://citadel:...@127.0.0.1:PORT/orders
//! assert_eq!(pg.execute("SELECT 1").await?.trim(), "1");
//!
//! let prom = Prometheus::builder()
//!     .scrape_target("gateway", ["127.0.0.1:9113"])
//!     .rule_file("alerts.yml", "groups: []\n")
//!     .start()
//!     .await?;
//! let gateway = Nginx::proxy_to(["127.0.0.1:8001"]).await?;
//! println!("{dsn} {} {}/health", prom.url(), gateway.url());
//! # Ok(()) }
//! ```
//!
//! | launcher | binary | Debian package |
//! |---|---|---|
//! | [`Postgres`] | `initdb`, `postgres`, `psql` | `postgresql` (`postgresql-client`) |
//! | [`Prometheus`] | `prometheus` | `prometheus` |
//! | [`Alertmanager`] | `prometheus-alertmanager` | `prometheus-alertmanager` |
//! | [`Pushgateway`] | `prometheus-pushgateway` | `prometheus-pushgateway` |
//! | [`Nginx`] | `nginx` | `nginx-light` |
//! | [`HangingListener`], [`closed_port`] | none | none |
//!
//! A missing binary is an error naming the package, never a skipped test. Should the test
//! process die without dropping a handle (an aborting panic, a runner's SIGKILL), a small
//! watchdog `sh` process notices within a second, stops the server and deletes its dir.
//!
//! The async functions need a tokio runtime with the time and I/O drivers enabled (what
//! `#[tokio::test]` gives).

#![forbid(unsafe_code)]

pub mod alertmanager;
mod error;
mod fixtures_binary;
pub mod lying;
#[cfg(feature = "models")]
pub mod model;
pub mod net;
pub mod nginx;
pub mod postgres;
mod process;
pub mod prometheus;
pub mod pushgateway;
#[cfg(feature = "qdrant")]
pub mod qdrant;

pub use alertmanager::{Alertmanager, AlertmanagerBuilder};
pub use error::{ErrorKind, TestkitError};
pub use fixtures_binary::{FIXTURES_BINARY, fixtures_binary};
pub use lying::LyingServer;
#[cfg(feature = "models")]
pub use model::{Faults, ModelServer, ModelServerBuilder};
pub use net::{HangingListener, closed_port};
pub use nginx::{Nginx, NginxBuilder};
#[cfg(feature = "fresh-database")]
pub use postgres::TestDatabase;
pub use postgres::{PgAuth, Postgres, PostgresBuilder};
pub use prometheus::{Prometheus, PrometheusBuilder};
pub use pushgateway::{Pushgateway, PushgatewayBuilder};
#[cfg(feature = "qdrant")]
pub use qdrant::{QdrantServer, QdrantServerBuilder};
