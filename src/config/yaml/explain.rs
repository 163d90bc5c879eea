//! A scanner error said in words, at the line of the mistake.

use saphyr_parser::ScanError;

use super::YamlError;

pub(super) fn scan_error(e: &ScanError, document: usize, text: &str) -> YamlError {
    let line = u32::try_from(e.marker().line()).unwrap_or(u32::MAX);
    let (line, message) = explain(text, e.info(), line);
    YamlError {
        line,
        document: document.max(1),
        message,
    }
}

/// The scanner's complaint in words, at the line where the mistake most
/// likely is. "mapping values are not allowed in this context" on a line
/// usually means the line above lacks its colon (`selector` for
/// `selector:`), or this line is indented deeper than the key above it.
fn explain(text: &str, info: &str, line: u32) -> (u32, String) {
    let lines: Vec<&str> = text.lines().collect();
    let body = |n: u32| -> Option<&str> {
        let l = lines.get(usize::try_from(n).ok()?.checked_sub(1)?)?;
        let without_comment = match l.find(" #") {
            Some(i) => &l[..i],
            None => l,
        };
        (!without_comment.trim().is_empty() && !without_comment.trim_start().starts_with('#'))
            .then_some(without_comment.trim_end())
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    if info.starts_with("mapping values are not allowed") || info.contains("expected ':'") {
        let previous = (1..line).rev().find_map(|n| body(n).map(|b| (n, b)));
        if let (Some((n, above)), Some(here)) = (previous, body(line)) {
            let key = above.trim_start().trim_start_matches("- ");
            if !key.contains(':') && !key.is_empty() {
                return (
                    n,
                    format!(
                        "invalid YAML: `{key}` has no colon: write `{key}:` to start a mapping \
                         (or quote a value that contains \": \")"
                    ),
                );
            }
            if indent(here) > indent(above) {
                let above_key = key.split(':').next().unwrap_or(key);
                return (
                    line,
                    format!(
                        "invalid YAML: this line is indented deeper than `{above_key}:` above it and \
                         cannot start a key there; keys of one mapping start in the same column"
                    ),
                );
            }
        }
        return (
            line,
            "invalid YAML: a `key: value` is not allowed here: quote a value that contains \": \", \
             or check the indentation of this line and the one above"
                .to_owned(),
        );
    }
    if info.contains("tabs") {
        return (
            line,
            "invalid YAML: tabs are not allowed in indentation; YAML indents with spaces"
                .to_owned(),
        );
    }
    (line, format!("invalid YAML: {info}"))
}
