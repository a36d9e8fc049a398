//! `junit.xml`: one `<testsuite>` per tester; Failed maps to `<failure>`, Error to `<error>`
//! (with the error kind as its `type`), Skipped to `<skipped>`. Measurements become
//! `<property>` elements of their test case.

use std::collections::HashMap;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::{Document, ReportError, Reporter};
use crate::config::redact_text;
use crate::outcome::{Outcome, TestResult};
use crate::runner::{RunPlan, RunSummary};

/// Build the JUnit document for a plan and its results (results may arrive in any order).
pub fn build_junit(plan: &RunPlan, results: &[TestResult], summary: &RunSummary) -> Report {
    let mut report = Report::new("citadel-itest");
    report.set_time(summary.duration);
    // Suites in order of first appearance in the plan, then any extra testers.
    let mut tester_order: Vec<&str> = Vec::new();
    for c in &plan.checks {
        if !tester_order.contains(&c.tester.as_str()) {
            tester_order.push(&c.tester);
        }
    }
    for r in results {
        if !tester_order.contains(&r.tester.as_str()) {
            tester_order.push(&r.tester);
        }
    }
    let position: HashMap<(&str, &str), usize> = plan
        .checks
        .iter()
        .enumerate()
        .map(|(i, c)| ((c.tester.as_str(), c.id.as_str()), i))
        .collect();
    for tester in tester_order {
        let mut mine: Vec<&TestResult> = results.iter().filter(|r| r.tester == tester).collect();
        mine.sort_by_key(|r| {
            position
                .get(&(r.tester.as_str(), r.id.as_str()))
                .copied()
                .unwrap_or(usize::MAX)
        });
        let mut suite = TestSuite::new(tester);
        suite.set_time(mine.iter().map(|r| r.duration).sum());
        for r in mine {
            suite.add_test_case(test_case(r));
        }
        report.add_test_suite(suite);
    }
    report
}

fn test_case(r: &TestResult) -> TestCase {
    let status = match &r.outcome {
        Outcome::Passed { .. } => TestCaseStatus::success(),
        Outcome::Failed { message, .. } => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(redact_text(message)).set_type("failed");
            s
        }
        Outcome::Skipped { reason } => {
            let mut s = TestCaseStatus::skipped();
            s.set_message(redact_text(reason));
            s
        }
        Outcome::Error { kind, message } => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_message(redact_text(message))
                .set_type(kind.to_string());
            s
        }
        #[allow(unreachable_patterns)]
        _ => TestCaseStatus::success(),
    };
    let mut case = TestCase::new(r.id.as_str(), status);
    case.set_classname(format!("{}.{}", r.tester, r.category))
        .set_time(r.duration);
    case.add_property(Property::new("attempts", r.attempts.to_string()));
    for m in r.outcome.measurements() {
        case.add_property(Property::new(
            format!("measurement.{}", m.name),
            m.to_string(),
        ));
    }
    case
}

/// Collects results and writes `junit.xml` when the run finishes.
pub struct JunitReporter(Document);

impl JunitReporter {
    /// Write to a file (atomically, at the end of the run).
    pub fn to_file(path: impl Into<std::path::PathBuf>) -> Self {
        JunitReporter(Document::file(path))
    }

    /// Write into a shared buffer (tests, embedding).
    pub fn to_memory(buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> Self {
        JunitReporter(Document::memory(buf))
    }
}

impl Reporter for JunitReporter {
    fn run_started(&mut self, plan: &RunPlan) -> Result<(), ReportError> {
        self.0.start(plan)
    }

    fn check_finished(&mut self, result: &TestResult) -> Result<(), ReportError> {
        self.0.add(result)
    }

    fn run_finished(&mut self, summary: &RunSummary) -> Result<(), ReportError> {
        let plan = self.0.plan(summary);
        let xml = build_junit(&plan, self.0.results(), summary)
            .to_string()
            .map_err(|e| ReportError::new("junit", None, std::io::Error::other(e.to_string())))?;
        self.0.write("junit", xml.as_bytes())
    }
}
