//! Path normalisation as Istio's default `BASE` (Envoy `normalize_path`):
//! RFC 3986 §6.2.2 percent-encoding normalisation of unreserved characters
//! (`%41` → `A`, `%2E` → `.`) then §5.2.4 dot-segment removal. Other
//! escapes stay as received, so `%2F` is never a separator
//! (`PathWithEscapedSlashesAction: KEEP_UNCHANGED`); slashes are not merged.

use std::borrow::Cow;

/// A `%` not followed by two hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidEscape;

/// `path` (origin-form, starts with `/`, no query) normalised.
pub(crate) fn normalize(path: &str) -> Result<Cow<'_, str>, InvalidEscape> {
    let decoded = decode_unreserved(path)?;
    if !has_dot_segment(&decoded) {
        return Ok(decoded);
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

fn decode_unreserved(path: &str) -> Result<Cow<'_, str>, InvalidEscape> {
    if !path.contains('%') {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(&hi), Some(&lo)) => {
                (hex(hi).ok_or(InvalidEscape)?, hex(lo).ok_or(InvalidEscape)?)
            }
            _ => return Err(InvalidEscape),
        };
        let c = hi << 4 | lo;
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(c));
        } else {
            out.push_str(&path[i..i + 3]);
        }
        i += 3;
    }
    Ok(Cow::Owned(out))
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

/// RFC 3986 §5.2.4 for an absolute path: `.` dropped, `..` removes the
/// segment before it (never above the root); a trailing `.`/`..` leaves a
/// trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let count = rest.split('/').count();
    let mut out: Vec<&str> = Vec::with_capacity(count);
    for (i, segment) in rest.split('/').enumerate() {
        let last = i + 1 == count;
        match segment {
            "." => {}
            ".." => {
                out.pop();
            }
            other => {
                out.push(other);
                continue;
            }
        }
        if last {
            out.push("");
        }
    }
    let mut normalized = String::with_capacity(path.len());
    normalized.push('/');
    normalized.push_str(&out.join("/"));
    normalized
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_as_rfc_3986_base() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/a/../../b", "/b"),
            ("/..", "/"),
            ("/../etc/passwd", "/etc/passwd"),
            ("/a//../b", "/a/b"),
            ("//a", "//a"),
            ("/a/.b/..c", "/a/.b/..c"),
            ("/%2e%2E/admin", "/admin"),
            ("/a/%2e/b", "/a/b"),
            ("/%41%7e%5F", "/A~_"),
            ("/a%2Fb/../c", "/c"),
            ("/a%2fb", "/a%2fb"),
            ("/a%2F..%2Fb", "/a%2F..%2Fb"),
            ("/%20x", "/%20x"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn a_percent_without_two_hex_digits_is_invalid() {
        for input in ["/%", "/%4", "/%zz", "/a%g1"] {
            assert_eq!(normalize(input), Err(InvalidEscape), "{input}");
        }
    }
}
