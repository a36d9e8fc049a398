//! Request bodies, rendered once before a run: the `body` template, and with `prompts` one
//! body per line of the JSON-lines file. The hot path only clones refcounted bytes.

use std::path::Path;

use bytes::Bytes;
use citadel_itest_core::config::read_input_text;

use crate::config::RequestConfig;

/// Largest prompts file read.
pub const MAX_PROMPTS_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The placeholder a body template carries for each prompt.
pub const PROMPT_PLACEHOLDER: &str = "{{prompt}}";

/// A prompts file that cannot be used, naming file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
#[non_exhaustive]
pub struct PromptsError {
    /// `file` or `file:line`.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

/// The bodies `request` sends, in file order: none for a request without a body; one for a
/// plain `body`; one per prompt line with `prompts`.
pub fn render(request: &RequestConfig) -> Result<Vec<Bytes>, PromptsError> {
    match (&request.body, &request.prompts) {
        (None, None) => Ok(Vec::new()),
        (Some(body), None) => Ok(vec![Bytes::from(body.clone())]),
        (template, Some(p)) => {
            let text =
                read_input_text(&p.file, MAX_PROMPTS_FILE_BYTES).map_err(|e| PromptsError {
                    location: p.file.display().to_string(),
                    message: e.to_string(),
                })?;
            render_lines(&p.file, &text, template.as_deref(), &p.field)
        }
    }
}

fn render_lines(
    file: &Path,
    text: &str,
    template: Option<&str>,
    field: &str,
) -> Result<Vec<Bytes>, PromptsError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fail = |message: String| PromptsError {
            location: format!("{}:{}", file.display(), i + 1),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| fail(format!("not a JSON value ({e})")))?;
        let body = match template {
            None => {
                if !value.is_object() {
                    return Err(fail(
                        "without a `body` template each line is sent as the body and must be a \
                         JSON object"
                            .into(),
                    ));
                }
                line.to_string()
            }
            Some(template) => {
                let prompt = match &value {
                    serde_json::Value::String(s) => s.as_str(),
                    serde_json::Value::Object(map) => match map.get(field) {
                        Some(serde_json::Value::String(s)) => s.as_str(),
                        Some(_) => return Err(fail(format!("field `{field}` is not a string"))),
                        None => return Err(fail(format!("the object has no field `{field}`"))),
                    },
                    _ => {
                        return Err(fail(format!(
                            "a line is a JSON string or an object with a string field `{field}`"
                        )));
                    }
                };
                // The prompt as the content of a JSON string: escaped, without the quotes.
                let quoted = serde_json::Value::from(prompt).to_string();
                let escaped = quoted
                    .strip_prefix('"')
                    .and_then(|q| q.strip_suffix('"'))
                    .unwrap_or(&quoted);
                template.replace(PROMPT_PLACEHOLDER, escaped)
            }
        };
        out.push(Bytes::from(body));
    }
    if out.is_empty() {
        return Err(PromptsError {
            location: file.display().to_string(),
            message: "no prompts: the file has no non-blank line".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PromptsConfig;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prompts.jsonl");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn prompts_fill_the_template_escaped() {
        let (_d, path) = write("\"say \\\"hi\\\"\\n\"\n\n{\"prompt\":\"two\",\"n\":1}\n");
        let request = RequestConfig::post(
            "http://127.0.0.1:1/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"{{prompt}}"}]}"#,
        )
        .prompts(PromptsConfig::new(&path));
        let bodies = render(&request).unwrap();
        assert_eq!(bodies.len(), 2);
        let first: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
        assert_eq!(first["messages"][0]["content"], "say \"hi\"\n");
        let second: serde_json::Value = serde_json::from_slice(&bodies[1]).unwrap();
        assert_eq!(second["messages"][0]["content"], "two");
    }

    #[test]
    fn lines_without_a_template_are_the_bodies() {
        let (_d, path) = write("{\"model\":\"m\",\"prompt\":\"a\"}\n");
        let mut request = RequestConfig::get("http://127.0.0.1:1/");
        request.prompts = Some(PromptsConfig::new(&path));
        assert_eq!(
            render(&request).unwrap()[0],
            &b"{\"model\":\"m\",\"prompt\":\"a\"}"[..]
        );
    }

    #[test]
    fn bad_lines_are_named_by_file_and_line() {
        let (_d, path) = write("\"ok\"\n{nope\n");
        let request = RequestConfig::post("http://127.0.0.1:1/", "{{prompt}}")
            .prompts(PromptsConfig::new(&path));
        let e = render(&request).unwrap_err();
        assert!(e.location.ends_with("prompts.jsonl:2"), "{e}");
        assert!(e.message.contains("not a JSON value"), "{e}");
        let (_d2, path) = write("{\"text\":\"x\"}\n");
        let request = RequestConfig::post("http://127.0.0.1:1/", "{{prompt}}")
            .prompts(PromptsConfig::new(&path));
        assert!(
            render(&request)
                .unwrap_err()
                .message
                .contains("no field `prompt`")
        );
        let (_d3, path) = write("\n  \n");
        let request = RequestConfig::post("http://127.0.0.1:1/", "{{prompt}}")
            .prompts(PromptsConfig::new(&path));
        assert!(render(&request).unwrap_err().message.contains("no prompts"));
    }
}
