//! The Pushgateway's grouping key, written once for the alert drill and the exporter:
//! `/metrics/job/<job>/<label>/<value>...`, a value that is empty or not a plain path segment
//! in the `<label>@base64/<base64url>` form the Pushgateway reads (an empty value is `=`).

use std::fmt::Write;

use citadel_itest_core::encode::base64url;

/// Whether `value` can stand in a path segment as it is.
fn is_plain_segment(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && value != "."
        && value != ".."
}

/// The path of a group under a Pushgateway base URL: `/metrics/job/<job>` then each label.
pub(crate) fn group_path<'a>(
    job: &'a str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut path = String::from("/metrics");
    for (name, value) in std::iter::once(("job", job)).chain(labels) {
        if is_plain_segment(value) {
            let _ = write!(path, "/{name}/{value}");
        } else if value.is_empty() {
            let _ = write!(path, "/{name}@base64/=");
        } else {
            let _ = write!(path, "/{name}@base64/{}", base64url(value.as_bytes()));
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_stay_and_others_are_base64url() {
        assert_eq!(
            group_path("citadel_itest", [("instance", "ci-7")]),
            "/metrics/job/citadel_itest/instance/ci-7"
        );
        assert_eq!(
            group_path("a/b", [("instance", ""), ("x", "a/b?")]),
            "/metrics/job@base64/YS9i/instance@base64/=/x@base64/YS9iPw=="
        );
        assert_eq!(group_path("..", []), "/metrics/job@base64/Li4=");
    }
}
