//! The [`Check`] trait, its identity and context, and composition helpers.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::outcome::Outcome;

/// Error type for a check that could not evaluate its target.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Dotted identifier of a check: `external_api.postgres.authentication`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CheckId(Cow<'static, str>);

impl CheckId {
    /// Build an id from any string.
    pub fn new(id: impl Into<String>) -> Self {
        CheckId(Cow::Owned(id.into()))
    }

    /// Build an id from a static string without allocating.
    pub const fn from_static(id: &'static str) -> Self {
        CheckId(Cow::Borrowed(id))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for CheckId {
    fn from(s: &str) -> Self {
        CheckId::new(s)
    }
}

impl From<String> for CheckId {
    fn from(s: String) -> Self {
        CheckId::new(s)
    }
}

/// What aspect of the platform a check exercises; reports count results by category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Category {
    /// Settings are present, parse and are in range.
    Configuration,
    /// The target can be reached (DNS, TCP, TLS, protocol handshake).
    Connectivity,
    /// Credentials are accepted and wrong ones refused.
    Authentication,
    /// Real operations succeed (queries, writes to temporary objects).
    Operations,
    /// Latency and throughput against targets.
    Performance,
    /// The target fails cleanly (refused, timeouts, error bodies).
    ErrorHandling,
    /// Database schema matches what is expected.
    Schema,
    /// Data obeys its invariants.
    Integrity,
    /// Connection pools behave under contention.
    Pooling,
    /// Requests reach the right backend.
    Routing,
    /// Requests spread over backends.
    LoadBalancing,
    /// Streaming responses are well-formed and timely.
    Streaming,
    /// Sustained load against SLOs.
    Load,
    /// Metrics are exposed and well-formed.
    Metrics,
    /// Alert rules load and fire.
    Alerting,
    /// Health and readiness endpoints answer.
    Health,
}

impl Category {
    /// Every category, in report order.
    pub const ALL: [Category; 16] = [
        Category::Configuration,
        Category::Connectivity,
        Category::Authentication,
        Category::Operations,
        Category::Performance,
        Category::ErrorHandling,
        Category::Schema,
        Category::Integrity,
        Category::Pooling,
        Category::Routing,
        Category::LoadBalancing,
        Category::Streaming,
        Category::Load,
        Category::Metrics,
        Category::Alerting,
        Category::Health,
    ];

    /// The snake_case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Configuration => "configuration",
            Category::Connectivity => "connectivity",
            Category::Authentication => "authentication",
            Category::Operations => "operations",
            Category::Performance => "performance",
            Category::ErrorHandling => "error_handling",
            Category::Schema => "schema",
            Category::Integrity => "integrity",
            Category::Pooling => "pooling",
            Category::Routing => "routing",
            Category::LoadBalancing => "load_balancing",
            Category::Streaming => "streaming",
            Category::Load => "load",
            Category::Metrics => "metrics",
            Category::Alerting => "alerting",
            Category::Health => "health",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the runner hands to a running check.
#[derive(Debug, Clone)]
pub struct CheckContext {
    /// Fired when the run is cancelled (Ctrl-C, fail-fast, deadline). Long checks `select!` on
    /// it and clean up.
    pub cancel: CancellationToken,
    /// When the runner will stop waiting for this check.
    pub deadline: Instant,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// Where [`detail`](Self::detail) writes; shared by all attempts of one check.
    details: Details,
    /// Where [`cleanup`](Self::cleanup) registers; shared by all attempts of one check.
    cleanups: crate::cleanup::Registry,
}

/// The details a check records while it runs; they become [`TestResult::details`]
/// (`crate::TestResult`) and show up in the JSON report (redacted like every other text).
#[derive(Debug, Clone, Default)]
pub(crate) struct Details(Arc<Mutex<BTreeMap<String, serde_json::Value>>>);

impl Details {
    pub(crate) fn take(&self) -> BTreeMap<String, serde_json::Value> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn insert(&self, key: String, value: serde_json::Value) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, value);
    }

    fn snapshot(&self) -> BTreeMap<String, serde_json::Value> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl CheckContext {
    /// A context with a fresh token and the given time budget (for tests and one-off runs).
    pub fn with_budget(budget: Duration) -> Self {
        CheckContext::new(CancellationToken::new(), Instant::now() + budget, 1)
    }

    pub(crate) fn new(cancel: CancellationToken, deadline: Instant, attempt: u32) -> Self {
        CheckContext {
            cancel,
            deadline,
            attempt,
            details: Details::default(),
            cleanups: Default::default(),
        }
    }

    pub(crate) fn with_details(mut self, details: Details) -> Self {
        self.details = details;
        self
    }

    pub(crate) fn with_cleanups(mut self, cleanups: crate::cleanup::Registry) -> Self {
        self.cleanups = cleanups;
        self
    }

    /// Register the removal of an object this check created on `service` (`object` names it:
    /// `collection citadel_itest_r1_vectors_perf_2`). The runner runs every registered removal
    /// once the check has ended, whatever its outcome (timeout, panic and cancellation
    /// included), and waits for them within the run's cleanup budget before the run returns;
    /// a removal that fails or does not finish is reported as a
    /// [`Leftover`](crate::Leftover). Register right after creating the object; disarm the
    /// returned handle if the check removed it itself.
    pub fn cleanup<F>(
        &self,
        service: impl Into<String>,
        object: impl Into<String>,
        removal: F,
    ) -> crate::cleanup::CleanupHandle
    where
        F: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.cleanups
            .register(service.into(), object.into(), removal)
    }

    /// Record a fact for the reports: a server version string, the address reached, a count.
    /// Text the reports show is redacted, but do not put secrets here. A later value for the
    /// same key replaces the earlier one (also across retries).
    ///
    /// ```
    /// # use citadel_itest_core::CheckContext;
    /// let ctx = CheckContext::with_budget(std::time::Duration::from_secs(1));
    /// ctx.detail("server_version", "15.18");
    /// assert_eq!(ctx.details()["server_version"], "15.18");
    /// ```
    pub fn detail(&self, key: impl Into<String>, value: impl Into<serde_json::Value>) {
        self.details.insert(key.into(), value.into());
    }

    /// The details recorded so far.
    pub fn details(&self) -> BTreeMap<String, serde_json::Value> {
        self.details.snapshot()
    }

    /// Time left before the deadline (zero when past it).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Retry-until-ready: re-run a check that failed or errored, with exponential backoff, until it
/// passes, attempts run out or its deadline is near.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = no retry).
    pub retries: u32,
    /// Wait before the first retry; doubles each time.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of one wait.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// `retries` retries starting at `initial_backoff`, capped at 5 s per wait.
    pub fn new(retries: u32, initial_backoff: Duration) -> Self {
        RetryPolicy {
            retries,
            initial_backoff,
            max_backoff: Duration::from_secs(5),
        }
    }

    /// The wait before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new(3, Duration::from_millis(200))
    }
}

/// One test case: the unit that passes or fails.
#[async_trait]
pub trait Check: Send + Sync {
    /// Stable dotted id, e.g. `basic.gateway.health`.
    fn id(&self) -> &CheckId;

    /// Category for reports.
    fn category(&self) -> Category;

    /// Time budget for the whole check (all attempts); `None` uses the suite default.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Retry-until-ready policy; `None` runs once.
    fn retry_policy(&self) -> Option<RetryPolicy> {
        None
    }

    /// Shared resources this check measures and must have to itself while it runs (like
    /// nextest's test groups): the runner never runs two checks that name the same
    /// [`Resource`] at once. A check that counts a server's connections, or a backend's
    /// traffic, declares it so another check's load does not end up in its figures.
    fn exclusive(&self) -> Vec<Resource> {
        Vec::new()
    }

    /// Evaluate. `Ok(outcome)` is a verdict (or a skip); `Err` means the harness could not
    /// evaluate and becomes `Error{Harness}`.
    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError>;
}

/// A shared resource that checks can claim exclusively; see [`Check::exclusive`].
///
/// Two resources are the same when their keys are equal; build keys from what identifies the
/// resource, e.g. `Resource::new("postgres-connections", "127.0.0.1:5432")`.
///
/// ```
/// use citadel_itest_core::Resource;
/// let a = Resource::new("postgres-connections", "127.0.0.1:5432");
/// assert_eq!(a.as_str(), "postgres-connections:127.0.0.1:5432");
/// assert_eq!(a, Resource::new("postgres-connections", "127.0.0.1:5432"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Resource(String);

impl Resource {
    /// A resource of `kind` (what is measured) at `instance` (which server or backend).
    pub fn new(kind: &str, instance: &str) -> Self {
        Resource(format!("{kind}:{instance}"))
    }

    /// The traffic of the server `url` points at: `traffic:<host>:<port>`, the same key for
    /// every URL of one server (path, scheme case and default port do not matter). Checks that
    /// measure a server's latency or count its requests claim it, and so does a load run
    /// against it, so none of them disturbs another. A URL that does not parse keys on itself.
    ///
    /// ```
    /// use citadel_itest_core::Resource;
    /// assert_eq!(
    ///     Resource::traffic("http://127.0.0.1:58080/v1"),
    ///     Resource::traffic("HTTP://127.0.0.1:58080/health")
    /// );
    /// assert_eq!(Resource::traffic("http://127.0.0.1/").as_str(), "traffic:127.0.0.1:80");
    /// ```
    pub fn traffic(url: &str) -> Self {
        let instance = url::Url::parse(url)
            .ok()
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
            .unwrap_or_else(|| url.to_string());
        Resource::new("traffic", &instance)
    }

    /// The key, `kind:instance`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A named group of checks built from one config section.
pub trait IntegrationTester: Send + Sync {
    /// The tester's name, also its config section: `basic`, `database`.
    fn name(&self) -> &str;

    /// The checks to run.
    fn checks(&self) -> Vec<Arc<dyn Check>>;
}

/// A check made from an async closure; see [`check_fn`].
pub struct FnCheck<F> {
    id: CheckId,
    category: Category,
    f: F,
}

/// Build a one-off check from an async closure, like tower's `service_fn`.
///
/// ```
/// use citadel_itest_core::{Category, Outcome, check_fn, run_one};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let check = check_fn("example.arith", Category::Operations, |_ctx| async {
///     if 2 + 2 == 4 { Ok(Outcome::passed()) } else { Ok(Outcome::failed("arithmetic broke")) }
/// });
/// run_one(&check).await.assert_passed();
/// # }
/// ```
pub fn check_fn<F, Fut>(id: impl Into<CheckId>, category: Category, f: F) -> FnCheck<F>
where
    F: Fn(CheckContext) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Outcome, BoxError>> + Send,
{
    FnCheck {
        id: id.into(),
        category,
        f,
    }
}

#[async_trait]
impl<F, Fut> Check for FnCheck<F>
where
    F: Fn(CheckContext) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Outcome, BoxError>> + Send,
{
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        self.category
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        (self.f)(ctx.clone()).await
    }
}

/// A check made from an async closure and shared state; see [`check_fn_with`].
pub struct FnCheckWith<S, F> {
    id: CheckId,
    category: Category,
    state: Arc<S>,
    f: F,
}

/// Like [`check_fn`], with state the closure gets on every run as an `Arc<S>` of its own: a
/// client, a URL, a pool, moved in once and never cloned by hand.
///
/// A check may run more than once (retries), so its closure is `Fn`: with `check_fn`, anything
/// captured must be cloned before each `async move` block. Here the check keeps `state` in an
/// `Arc` and hands the closure a clone of that `Arc` each time.
///
/// ```
/// use citadel_itest_core::{Category, Outcome, check_fn_with, run_one};
///
/// // What the closure needs, e.g. a client and the service's URL; here the rows to inspect.
/// struct Orders { amounts: Vec<i64> }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let state = Orders { amounts: vec![10, 20, 30] };
/// let check = check_fn_with("orders.amounts", Category::Integrity, state, |orders, _ctx| async move {
///     Ok(match orders.amounts.iter().find(|a| **a <= 0) {
///         None => Outcome::passed(),
///         Some(bad) => Outcome::failed(format!("order amount {bad} is not positive")),
///     })
/// });
/// run_one(&check).await.assert_passed();
/// # }
/// ```
pub fn check_fn_with<S, F, Fut>(
    id: impl Into<CheckId>,
    category: Category,
    state: S,
    f: F,
) -> FnCheckWith<S, F>
where
    S: Send + Sync,
    F: Fn(Arc<S>, CheckContext) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Outcome, BoxError>> + Send,
{
    FnCheckWith {
        id: id.into(),
        category,
        state: Arc::new(state),
        f,
    }
}

#[async_trait]
impl<S, F, Fut> Check for FnCheckWith<S, F>
where
    S: Send + Sync,
    F: Fn(Arc<S>, CheckContext) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Outcome, BoxError>> + Send,
{
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        self.category
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        (self.f)(self.state.clone(), ctx.clone()).await
    }
}

/// Overrides a check's timeout; see [`CheckExt::with_timeout`].
pub struct WithTimeout<C> {
    inner: C,
    timeout: Duration,
}

/// Overrides a check's retry policy; see [`CheckExt::retry_until_ready`].
pub struct RetryUntilReady<C> {
    inner: C,
    policy: RetryPolicy,
}

/// Adds an exclusive resource to a check; see [`CheckExt::exclusive_on`].
pub struct Exclusive<C> {
    inner: C,
    resource: Resource,
}

#[async_trait]
impl<C: Check> Check for Exclusive<C> {
    fn id(&self) -> &CheckId {
        self.inner.id()
    }
    fn category(&self) -> Category {
        self.inner.category()
    }
    fn timeout(&self) -> Option<Duration> {
        self.inner.timeout()
    }
    fn retry_policy(&self) -> Option<RetryPolicy> {
        self.inner.retry_policy()
    }
    fn exclusive(&self) -> Vec<Resource> {
        let mut all = self.inner.exclusive();
        all.push(self.resource.clone());
        all
    }
    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        self.inner.run(ctx).await
    }
}

macro_rules! delegate_check {
    ($ty:ident, $timeout:expr, $retry:expr) => {
        #[async_trait]
        impl<C: Check> Check for $ty<C> {
            fn id(&self) -> &CheckId {
                self.inner.id()
            }
            fn category(&self) -> Category {
                self.inner.category()
            }
            fn timeout(&self) -> Option<Duration> {
                #[allow(clippy::redundant_closure_call)]
                ($timeout)(self)
            }
            fn retry_policy(&self) -> Option<RetryPolicy> {
                #[allow(clippy::redundant_closure_call)]
                ($retry)(self)
            }
            fn exclusive(&self) -> Vec<Resource> {
                self.inner.exclusive()
            }
            async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
                self.inner.run(ctx).await
            }
        }
    };
}

delegate_check!(
    WithTimeout,
    |s: &WithTimeout<C>| Some(s.timeout),
    |s: &WithTimeout<C>| s.inner.retry_policy()
);
delegate_check!(
    RetryUntilReady,
    |s: &RetryUntilReady<C>| s.inner.timeout(),
    |s: &RetryUntilReady<C>| Some(s.policy)
);

/// Composition helpers for any [`Check`], in the spirit of tower's `ServiceExt`.
pub trait CheckExt: Check + Sized + 'static {
    /// Give the check its own time budget (all attempts included).
    fn with_timeout(self, timeout: Duration) -> WithTimeout<Self> {
        WithTimeout {
            inner: self,
            timeout,
        }
    }

    /// Retry the check on failure or error until it passes or the policy is spent.
    fn retry_until_ready(self, policy: RetryPolicy) -> RetryUntilReady<Self> {
        RetryUntilReady {
            inner: self,
            policy,
        }
    }

    /// Claim `resource` for the whole run of this check: the runner runs no other check that
    /// claims it at the same time.
    fn exclusive_on(self, resource: Resource) -> Exclusive<Self> {
        Exclusive {
            inner: self,
            resource,
        }
    }

    /// Type-erase into a shareable trait object.
    fn boxed(self) -> Arc<dyn Check> {
        Arc::new(self)
    }
}

impl<C: Check + Sized + 'static> CheckExt for C {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(400));
        assert_eq!(p.backoff(4), Duration::from_millis(500));
        assert_eq!(p.backoff(40), Duration::from_millis(500));
    }

    #[test]
    fn wrappers_override_only_their_knob() {
        let c = check_fn("x.y", Category::Health, |_| async { Ok(Outcome::passed()) })
            .with_timeout(Duration::from_secs(3))
            .retry_until_ready(RetryPolicy::new(2, Duration::from_millis(10)));
        assert_eq!(c.timeout(), Some(Duration::from_secs(3)));
        assert_eq!(c.retry_policy().unwrap().retries, 2);
        assert_eq!(c.id().as_str(), "x.y");
        assert_eq!(c.category(), Category::Health);
    }
}
