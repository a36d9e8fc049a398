//! `database.<name>.schema.<pg_schema>` and `database.<name>.schema`: the live schema against
//! the expected one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, ErrorKind, Measurement, Outcome, Unit,
};
use sqlx::Connection as _;

use crate::canon::{Canon, unknown_types};
use crate::catalog::{Catalog, Namespaces};
use crate::config::DatabaseTarget;
use crate::connect::{Connector, describe};
use crate::diff::{
    Resolved, diff_database, diff_namespace_with, types_to_resolve, want_expressions,
};
use crate::objects::canonical_view_definitions;
use crate::spec::ExpectedSchema;

/// The expected schema, or why it could not be loaded (reported when the check runs).
pub(crate) type LoadedSpec = Result<Arc<ExpectedSchema>, String>;

/// Compares one Postgres schema (namespace, e.g. `chat`) with its declaration: tables, columns
/// (type, nullability, default, identity), primary key, unique keys, foreign keys (with
/// actions), indexes (columns, uniqueness, method, predicate), check constraints and row-level
/// security. With [`SchemaCheck::exact`], anything present in that schema but not declared is a
/// difference too. Check id `database.<name>.schema.<pg_schema>`.
///
/// It looks inside one namespace; [`DatabaseSchemaCheck`] looks at the database as a whole
/// (extensions, and with `exact` no undeclared schema). The tester makes one
/// `DatabaseSchemaCheck` and one `SchemaCheck` per declared schema.
///
/// ```
/// use citadel_itest_database::{DatabaseTarget, ExpectedSchema, NamespaceSpec, SchemaCheck, TableSpec};
///
/// let db = DatabaseTarget::from_url("main", "postgres://citadel@127.0.0.1:55432/citadel").unwrap();
/// let expected = ExpectedSchema::new().schema(
///     "chat",
///     NamespaceSpec::new().table("sessions", TableSpec::new().column("id", "uuid NOT NULL")),
/// );
/// let check = SchemaCheck::new(&db, expected, "chat").exact(true);
/// ```
///
/// Reads the catalog in one round of queries (six, whatever the number of tables). Fails with
/// every difference, e.g. `column chat.sessions.user_id: expected uuid NOT NULL, found text NULL;
/// missing index chat.messages(session_id)`. Measures `catalog_read_time`, `tables`,
/// `differences`.
#[derive(Debug, Clone)]
pub struct SchemaCheck {
    id: CheckId,
    connector: Arc<Connector>,
    spec: LoadedSpec,
    namespace: String,
    exact: bool,
    read_only: bool,
    timeout: Duration,
}

impl SchemaCheck {
    /// Read-only mode (`run.read_only`): declared view definitions are compared as text
    /// (whitespace aside) instead of through a temporary view in a rolled-back transaction.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// The check of the Postgres schema `namespace` as declared in `expected` (an
    /// [`ExpectedSchema`] or an `Arc` of one shared between checks), on `target`; not exact
    /// unless [`SchemaCheck::exact`] says so.
    pub fn new(
        target: &DatabaseTarget,
        expected: impl Into<Arc<ExpectedSchema>>,
        namespace: impl Into<String>,
    ) -> Self {
        Self::build(
            Arc::new(Connector::new(target)),
            Ok(expected.into()),
            namespace.into(),
            false,
        )
    }

    /// Exact mode: tables, columns, indexes, constraints, ... present in the schema but not
    /// declared are differences too (default off: only what is declared is compared).
    pub fn exact(mut self, exact: bool) -> Self {
        self.exact = exact;
        self
    }

    pub(crate) fn build(
        connector: Arc<Connector>,
        spec: LoadedSpec,
        namespace: String,
        exact: bool,
    ) -> Self {
        SchemaCheck {
            id: CheckId::new(format!("database.{}.schema.{namespace}", connector.name)),
            timeout: base_timeout(connector.target()),
            connector,
            spec,
            namespace,
            exact,
            read_only: false,
        }
    }

    async fn evaluate(&self) -> Result<Outcome, BoxError> {
        let spec = self.spec.as_ref().map_err(|e| e.clone())?;
        let Some(ns_spec) = spec.schemas.get(&self.namespace) else {
            return Err(format!("schema {} is not declared", self.namespace).into());
        };
        let mut conn = self
            .connector
            .connect(&self.connector.app_name("schema"))
            .await?;
        let started = Instant::now();
        let catalog = Catalog::read(&mut conn, &Namespaces::Only(vec![self.namespace.clone()]))
            .await
            .map_err(|e| {
                format!(
                    "read the catalog of database {}: {}",
                    self.connector.name,
                    describe(&e)
                )
            })?;
        let read_time = started.elapsed();

        // Let the server canonicalise every expression to compare and resolve declared types
        // that differ from the live ones: one read-only statement each.
        let started = Instant::now();
        let mut resolved = Resolved {
            canon: Canon::new(),
            ..Resolved::default()
        };
        want_expressions(&self.namespace, ns_spec, &catalog, &mut resolved.canon);
        let expressions = resolved.canon.wanted_len();
        let server = |e: sqlx::Error| {
            format!(
                "canonicalise the declared expressions on database {}: {}",
                self.connector.name,
                describe(&e)
            )
        };
        resolved.canon.resolve(&mut conn).await.map_err(server)?;
        resolved.views.as_text = self.read_only;
        if !self.read_only {
            resolved.views.canonical =
                canonical_view_definitions(&mut conn, ns_spec, &catalog, &self.namespace)
                    .await
                    .map_err(server)?;
        }
        let types = types_to_resolve(&self.namespace, ns_spec, &catalog);
        resolved.unknown_types = unknown_types(&mut conn, &types)
            .await
            .map_err(server)?
            .into_iter()
            .collect();
        let canon_time = started.elapsed();
        let _ = conn.close().await;
        let findings = diff_namespace_with(
            &self.namespace,
            ns_spec,
            &catalog,
            self.exact,
            &[],
            &resolved,
        );
        let measurements = vec![
            Measurement::duration("catalog_read_time", read_time),
            Measurement::duration("canonicalise_time", canon_time),
            Measurement::new("expressions", expressions as f64, Unit::Count),
            Measurement::new("tables", catalog.tables.len() as f64, Unit::Count),
        ];
        if !findings.declaration.is_empty() {
            let mut message = format!(
                "problem with the declaration: {}",
                findings.declaration.join("; ")
            );
            if !findings.diffs.is_empty() {
                message.push_str(&format!(
                    "; differences besides: {}",
                    findings.diffs.join("; ")
                ));
            }
            return Ok(Outcome::error(ErrorKind::Harness, message));
        }
        Ok(verdict(findings.diffs, measurements))
    }
}

/// Budget of a check of `target`: its `timeout`, else the runner's default.
pub(crate) fn base_timeout(target: &DatabaseTarget) -> Duration {
    target
        .timeout
        .unwrap_or(citadel_itest_core::DEFAULT_CHECK_TIMEOUT)
}

/// Passed without differences, else Failed listing them; `differences` is always measured.
pub(crate) fn verdict(diffs: Vec<String>, mut measurements: Vec<Measurement>) -> Outcome {
    measurements.push(Measurement::new(
        "differences",
        diffs.len() as f64,
        Unit::Count,
    ));
    if diffs.is_empty() {
        Outcome::Passed { measurements }
    } else {
        Outcome::Failed {
            message: diffs.join("; "),
            measurements,
        }
    }
}

/// Runs `work` unless the run is cancelled first.
pub(crate) async fn cancellable<F>(
    ctx: &CheckContext,
    what: &str,
    work: F,
) -> Result<Outcome, BoxError>
where
    F: std::future::Future<Output = Result<Outcome, BoxError>>,
{
    tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => Ok(Outcome::error(ErrorKind::Cancelled, format!("{what} cancelled"))),
        outcome = work => outcome,
    }
}

#[async_trait]
impl Check for SchemaCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        Category::Schema
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        cancellable(ctx, &format!("schema check {}", self.id), self.evaluate()).await
    }
}

/// The database as a whole against the expected schema: required extensions (name, version,
/// schema) and, with [`DatabaseSchemaCheck::exact`], no undeclared extension (besides
/// `plpgsql`) or schema. Check id `database.<name>.schema`.
///
/// It does not look inside the schemas: that is [`SchemaCheck`], one per declared schema.
#[derive(Debug, Clone)]
pub struct DatabaseSchemaCheck {
    id: CheckId,
    connector: Arc<Connector>,
    spec: LoadedSpec,
    exact: bool,
    timeout: Duration,
}

impl DatabaseSchemaCheck {
    /// The database-wide check of `expected` (an [`ExpectedSchema`] or an `Arc` of one) on
    /// `target`; not exact unless [`DatabaseSchemaCheck::exact`] says so.
    pub fn new(target: &DatabaseTarget, expected: impl Into<Arc<ExpectedSchema>>) -> Self {
        Self::build(Arc::new(Connector::new(target)), Ok(expected.into()), false)
    }

    /// Exact mode: an extension (besides `plpgsql`) or a schema present but not declared is a
    /// difference (default off).
    pub fn exact(mut self, exact: bool) -> Self {
        self.exact = exact;
        self
    }

    pub(crate) fn build(connector: Arc<Connector>, spec: LoadedSpec, exact: bool) -> Self {
        DatabaseSchemaCheck {
            id: CheckId::new(format!("database.{}.schema", connector.name)),
            timeout: base_timeout(connector.target()),
            connector,
            spec,
            exact,
        }
    }

    async fn evaluate(&self) -> Result<Outcome, BoxError> {
        let spec = self.spec.as_ref().map_err(|e| e.clone())?;
        let mut conn = self
            .connector
            .connect(&self.connector.app_name("schema"))
            .await?;
        let started = Instant::now();
        // Only namespaces and extensions matter here; tables are read only in exact mode.
        let namespaces = if self.exact {
            Namespaces::NonSystem
        } else {
            Namespaces::Only(Vec::new())
        };
        let catalog = Catalog::read(&mut conn, &namespaces).await.map_err(|e| {
            format!(
                "read the catalog of database {}: {}",
                self.connector.name,
                describe(&e)
            )
        })?;
        let read_time = started.elapsed();
        let _ = conn.close().await;
        let diffs = diff_database(spec, &catalog, self.exact);
        Ok(verdict(
            diffs,
            vec![
                Measurement::duration("catalog_read_time", read_time),
                Measurement::new("extensions", catalog.extensions.len() as f64, Unit::Count),
            ],
        ))
    }
}

#[async_trait]
impl Check for DatabaseSchemaCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        Category::Schema
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        cancellable(ctx, &format!("schema check {}", self.id), self.evaluate()).await
    }
}
