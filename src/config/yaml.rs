//! YAML text → a tree of [`Node`]s that remember their line.
//!
//! The parsing itself is `saphyr-parser` (YAML 1.2); this module turns its
//! event stream into one tree per document and enforces the budgets that keep
//! hostile input harmless: file size, nesting depth, and the total number of
//! nodes per file *after* alias expansion (so "billion laughs" stops early).
//! Building is iterative: no recursion, whatever the depth of the input.

mod explain;

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use self::explain::scan_error;

/// Limits applied to every file.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_file_bytes: usize,
    pub max_depth: usize,
    pub max_nodes: usize,
    pub max_documents: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_file_bytes: crate::source::MAX_DOCUMENT_BYTES,
        max_depth: 64,
        max_nodes: 1_000_000,
        max_documents: 10_000,
    };
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    /// 1-based line where the node starts.
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// A scalar; `plain` is false when it was quoted or a block scalar, so it
    /// is a string whatever it looks like.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A short description of the node's type for messages: "a string", "a list"...
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "null".to_owned(),
            Value::Scalar { text, plain: false } => format!("string {text:?}"),
            Value::Scalar { text, plain: true } => match resolve_plain(text) {
                Plain::Int(_) | Plain::Float(_) => format!("number {text}"),
                Plain::Bool(_) => format!("boolean {text}"),
                Plain::Null => "null".to_owned(),
                Plain::Str => format!("string {text:?}"),
            },
            Value::Seq(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
        }
    }

    /// The value of `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and value of `key` when this node is a mapping.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The text of a scalar node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    fn count(&self) -> usize {
        let mut n = 0;
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            n += 1;
            match &node.value {
                Value::Seq(items) => stack.extend(items),
                Value::Map(entries) => {
                    for (k, v) in entries {
                        stack.push(k);
                        stack.push(v);
                    }
                }
                Value::Null | Value::Scalar { .. } => {}
            }
        }
        n
    }
}

/// What a plain scalar means under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Plain {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str,
}

pub fn resolve_plain(text: &str) -> Plain {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Plain::Null,
        "true" | "True" | "TRUE" => return Plain::Bool(true),
        "false" | "False" | "FALSE" => return Plain::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Plain::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Plain::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Plain::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return i128::from_str_radix(hex, 16).map_or(Plain::Str, Plain::Int);
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return i128::from_str_radix(oct, 8).map_or(Plain::Str, Plain::Int);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i128>().map_or(Plain::Str, Plain::Int);
    }
    let float_like = digits.bytes().any(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if float_like {
        if let Ok(f) = text.parse::<f64>() {
            return Plain::Float(f);
        }
    }
    Plain::Str
}

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// 1-based index in the file, counting empty documents too.
    pub index: usize,
    /// Line of the document's first content (or of its `---` when empty).
    pub line: u32,
    /// `None` for an empty (or comments-only) document.
    pub root: Option<Node>,
    /// Keys repeated in a mapping: YAML forbids them, and the loader
    /// reports each with the resource and field it is in.
    pub duplicates: Vec<Duplicate>,
}

/// A key that a mapping repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// From the document's root: `spec.tcp[0].route[1].weight`.
    pub path: String,
    pub key: String,
    pub line: u32,
    pub first_line: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct YamlError {
    pub line: u32,
    /// 1-based index of the document the error is in.
    pub document: usize,
    pub message: String,
}

enum Frame {
    Seq {
        line: u32,
        anchor: usize,
        items: Vec<Node>,
        /// Written `[...]`.
        flow: bool,
    },
    Map {
        line: u32,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        /// A pair inside a flow sequence without `{` (`[a: b]`).
        implicit: bool,
        /// Its key was followed by a colon glued to `,` or `]`.
        glued: bool,
    },
}

struct Builder<'s> {
    /// The text parsed, to look at a colon the events do not show.
    source: &'s str,
    /// Byte offset of each line of `source`, built at the first look.
    line_starts: Vec<usize>,
    limits: Limits,
    nodes: usize,
    document: usize,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    duplicates: Vec<Duplicate>,
}

impl Builder<'_> {
    fn error(&self, line: u32, message: impl Into<String>) -> YamlError {
        YamlError {
            line,
            document: self.document.max(1),
            message: message.into(),
        }
    }

    fn charge(&mut self, n: usize, line: u32) -> Result<(), YamlError> {
        self.nodes += n;
        if self.nodes > self.limits.max_nodes {
            return Err(self.error(
                line,
                format!(
                    "the file expands to more than {} YAML nodes (aliases included); \
                     is an anchor referenced recursively?",
                    self.limits.max_nodes
                ),
            ));
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame, line: u32) -> Result<(), YamlError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(self.error(
                line,
                format!("nesting deeper than {} levels", self.limits.max_depth),
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    /// YAML's merge key: `<<: *base` (or `<<: [*a, *b]`) adds the entries of
    /// the merged mappings that this mapping does not set itself; of several
    /// mappings, the first to set a key wins.
    fn merge_keys(&self, entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, YamlError> {
        let is_merge =
            |k: &Node| matches!(&k.value, Value::Scalar { text, plain: true } if text == "<<");
        if !entries.iter().any(|(k, _)| is_merge(k)) {
            return Ok(entries);
        }
        let mut own = Vec::with_capacity(entries.len());
        let mut sources = Vec::new();
        for (key, value) in entries {
            if !is_merge(&key) {
                own.push((key, value));
                continue;
            }
            let line = value.line;
            match value.value {
                Value::Map(map) => sources.push(map),
                Value::Seq(items) => {
                    for item in items {
                        match item.value {
                            Value::Map(map) => sources.push(map),
                            _ => {
                                return Err(self.error(
                                    item.line,
                                    "each item of a merge key (<<) list must be a mapping",
                                ));
                            }
                        }
                    }
                }
                _ => {
                    return Err(self.error(
                        line,
                        "the value of a merge key (<<) must be a mapping, or a list of mappings",
                    ));
                }
            }
        }
        for (key, value) in sources.into_iter().flatten() {
            let text = key.as_str().unwrap_or_default();
            if !own
                .iter()
                .any(|(k, _)| k.as_str().unwrap_or_default() == text)
            {
                own.push((key, value));
            }
        }
        Ok(own)
    }

    /// The character at `line` (1-based) and `col` (0-based, in characters).
    fn char_at(&mut self, line: usize, col: usize) -> Option<char> {
        if self.line_starts.is_empty() {
            self.line_starts.push(0);
            self.line_starts
                .extend(newline_offsets(self.source).map(|i| i + 1));
        }
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        let text = self.source.get(start..)?;
        text.split('\n').next()?.chars().nth(col)
    }

    /// The path from the document's root to `key` of the innermost mapping.
    fn path_to(&self, key: &str) -> String {
        let mut path = String::new();
        let outer = self.stack.len().saturating_sub(1);
        for frame in &self.stack[..outer] {
            match frame {
                Frame::Map { key: Some(k), .. } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k.as_str().unwrap_or("null"));
                }
                Frame::Map { key: None, .. } => {}
                Frame::Seq { items, .. } => path.push_str(&format!("[{}]", items.len())),
            }
        }
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        path
    }

    /// A finished node: record its anchor, then hang it on its parent.
    fn finish(&mut self, node: Node, anchor: usize) -> Result<(), YamlError> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    if !matches!(node.value, Value::Scalar { .. } | Value::Null) {
                        return Err(self.error(
                            node.line,
                            "a mapping key must be a plain value, not a list or mapping",
                        ));
                    }
                    let text = node.as_str().unwrap_or_default();
                    let first = entries
                        .iter()
                        .find(|(k, _)| k.as_str().unwrap_or_default() == text)
                        .map(|(k, _)| k.line);
                    if let Some(first_line) = first {
                        let duplicate = Duplicate {
                            path: self.path_to(text),
                            key: text.to_owned(),
                            line: node.line,
                            first_line,
                        };
                        self.duplicates.push(duplicate);
                        if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                            *key = Some(node);
                        }
                        return Ok(());
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        let line = u32::try_from(span.start.line()).unwrap_or(u32::MAX);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.charge(1, line)?;
                let forced_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let plain = style == ScalarStyle::Plain && !forced_str;
                self.scalar(text.into_owned(), plain, anchor, span, line)
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id) else {
                    return Err(self.error(line, "alias to an unknown anchor"));
                };
                let node = Node {
                    line,
                    ..node.clone()
                };
                self.charge(node.count(), line)?;
                self.finish(node, 0)
            }
            Event::SequenceStart(anchor, _) => {
                self.charge(1, line)?;
                let flow = self.char_at(span.start.line(), span.start.col()) == Some('[');
                self.open(
                    Frame::Seq {
                        line,
                        anchor,
                        items: Vec::new(),
                        flow,
                    },
                    line,
                )
            }
            Event::MappingStart(anchor, _) => {
                self.charge(1, line)?;
                self.start_map(anchor, span, line)
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    line,
                    anchor,
                    items,
                    ..
                }) => self.finish(
                    Node {
                        value: Value::Seq(items),
                        line,
                    },
                    anchor,
                ),
                Some(Frame::Map {
                    line,
                    anchor,
                    entries,
                    glued,
                    ..
                }) => self.end_map(entries, glued, anchor, line),
                None => Err(self.error(line, "unbalanced end of collection")),
            },
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => Ok(()),
        }
    }

    /// A scalar: null when plain and spelled as one, else its text. The
    /// first plain key of a pair without braces in a flow sequence notes
    /// whether its colon is glued to `,` or `]` (see [`Builder::end_map`]).
    fn scalar(
        &mut self,
        text: String,
        plain: bool,
        anchor: usize,
        span: Span,
        line: u32,
    ) -> Result<(), YamlError> {
        let first_key_of_pair = matches!(
            self.stack.last(),
            Some(Frame::Map { implicit: true, entries, key: None, .. }) if entries.is_empty()
        );
        if plain && first_key_of_pair {
            let glued = self.char_at(span.end.line(), span.end.col()) == Some(':')
                && matches!(
                    self.char_at(span.end.line(), span.end.col() + 1),
                    Some(',' | ']')
                );
            if let Some(Frame::Map { glued: g, .. }) = self.stack.last_mut() {
                *g = glued;
            }
        }
        let value = if plain && resolve_plain(&text) == Plain::Null {
            Value::Null
        } else {
            Value::Scalar { text, plain }
        };
        self.finish(Node { value, line }, anchor)
    }

    fn start_map(&mut self, anchor: usize, span: Span, line: u32) -> Result<(), YamlError> {
        // Only a flow sequence holds a pair without braces whose key may
        // hide a glued colon; block sequences never do.
        let in_flow_seq = matches!(self.stack.last(), Some(Frame::Seq { flow: true, .. }));
        let implicit =
            in_flow_seq && self.char_at(span.start.line(), span.start.col()) != Some('{');
        self.open(
            Frame::Map {
                line,
                anchor,
                entries: Vec::new(),
                key: None,
                implicit,
                glued: false,
            },
            line,
        )
    }

    /// A mapping closed: its merge keys applied, or the string a glued
    /// colon stands for.
    fn end_map(
        &mut self,
        entries: Vec<(Node, Node)>,
        glued: bool,
        anchor: usize,
        line: u32,
    ) -> Result<(), YamlError> {
        // Kubernetes' YAML (go-yaml) reads `[1.2.3.4, 001:db8::]` as two
        // strings: a colon glued to `,` or `]` does not start a value
        // there. YAML 1.2 makes `001:db8:` a key with an empty value;
        // ringway reads it as Kubernetes does.
        if glued && entries.len() == 1 && entries[0].1.value == Value::Null {
            if let Some(text) = entries[0].0.as_str() {
                let value = Value::Scalar {
                    text: format!("{text}:"),
                    plain: true,
                };
                return self.finish(Node { value, line }, anchor);
            }
        }
        let entries = self.merge_keys(entries)?;
        self.finish(
            Node {
                value: Value::Map(entries),
                line,
            },
            anchor,
        )
    }
}

/// Byte offsets of every `\n` of `text`.
fn newline_offsets(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i)
}

/// Parses every document of `text`.
pub fn parse(text: &str, limits: Limits) -> Result<Vec<Document>, YamlError> {
    if text.len() > limits.max_file_bytes {
        return Err(YamlError {
            line: 1,
            document: 1,
            message: format!(
                "the file is {} bytes, more than the limit of {} bytes",
                text.len(),
                limits.max_file_bytes
            ),
        });
    }
    let mut builder = Builder {
        source: text,
        line_starts: Vec::new(),
        limits,
        nodes: 0,
        document: 0,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        duplicates: Vec::new(),
    };
    let mut documents = Vec::new();
    let mut doc_line = 1;
    for result in Parser::new_from_str(text) {
        let (event, span) = result.map_err(|e| scan_error(&e, builder.document, text))?;
        match event {
            Event::DocumentStart(_) => {
                builder.document += 1;
                if builder.document > limits.max_documents {
                    return Err(builder.error(
                        doc_line,
                        format!("more than {} documents in one file", limits.max_documents),
                    ));
                }
                doc_line = u32::try_from(span.start.line()).unwrap_or(u32::MAX);
                builder.anchors.clear();
            }
            Event::DocumentEnd => {
                let root = builder.root.take().filter(|r| r.value != Value::Null);
                // A document's line is its first line of content, not its `---`.
                let line = root.as_ref().map_or(doc_line, |r| r.line);
                documents.push(Document {
                    index: builder.document,
                    line,
                    root,
                    duplicates: std::mem::take(&mut builder.duplicates),
                });
            }
            other => builder.event(other, span)?,
        }
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Vec<Document> {
        parse(text, Limits::DEFAULT).expect("valid YAML")
    }

    #[test]
    fn documents_keep_index_line_and_emptiness() {
        let docs = parse_ok("# only a comment\n---\na: 1\n---\n---\nb: [x, 'y']\n");
        let summary: Vec<(usize, u32, bool)> = docs
            .iter()
            .map(|d| (d.index, d.line, d.root.is_some()))
            .collect();
        assert_eq!(summary, vec![(1, 3, true), (2, 4, false), (3, 6, true)]);
        let b = docs[2].root.as_ref().and_then(|r| r.get("b")).expect("b");
        assert_eq!(b.line, 6);
        let Value::Seq(items) = &b.value else {
            panic!("b is a list")
        };
        assert_eq!(
            items[0].value,
            Value::Scalar {
                text: "x".into(),
                plain: true
            }
        );
        assert_eq!(
            items[1].value,
            Value::Scalar {
                text: "y".into(),
                plain: false
            }
        );
    }

    #[test]
    fn plain_scalars_resolve_by_the_core_schema() {
        struct Case {
            text: &'static str,
            want: Plain,
        }
        let cases = [
            Case {
                text: "9000",
                want: Plain::Int(9000),
            },
            Case {
                text: "-5",
                want: Plain::Int(-5),
            },
            Case {
                text: "0x10",
                want: Plain::Int(16),
            },
            Case {
                text: "1.5",
                want: Plain::Float(1.5),
            },
            Case {
                text: "true",
                want: Plain::Bool(true),
            },
            Case {
                text: "~",
                want: Plain::Null,
            },
            Case {
                text: "10s",
                want: Plain::Str,
            },
            Case {
                text: "v1",
                want: Plain::Str,
            },
            Case {
                text: "1.2.3.4",
                want: Plain::Str,
            },
        ];
        for case in cases {
            assert_eq!(resolve_plain(case.text), case.want, "text {}", case.text);
        }
    }

    #[test]
    fn duplicate_keys_are_recorded_with_their_path_and_both_lines() {
        let docs = parse(
            "a: 1\nb: 2\na: 3\nspec:\n  tcp:\n  - route:\n    - {weight: 1, weight: 2}\n",
            Limits::DEFAULT,
        )
        .expect("parsed");
        let found: Vec<(String, u32, u32)> = docs[0]
            .duplicates
            .iter()
            .map(|d| (d.path.clone(), d.line, d.first_line))
            .collect();
        assert_eq!(
            found,
            [
                ("a".to_owned(), 3, 1),
                ("spec.tcp[0].route[0].weight".to_owned(), 7, 7)
            ]
        );
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let text = "[".repeat(10_000) + &"]".repeat(10_000);
        let err = parse(&text, Limits::DEFAULT).expect_err("too deep");
        assert!(
            err.message.contains("nesting") || err.message.contains("recursion"),
            "{err}"
        );
    }

    #[test]
    fn alias_expansion_is_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&text, Limits::DEFAULT).expect_err("billion laughs");
        assert!(err.message.contains("more than"), "{err}");
    }

    #[test]
    fn invalid_yaml_names_the_line() {
        let err = parse("a: 1\nb: [1, 2\nc: 3\n", Limits::DEFAULT).expect_err("invalid");
        assert!(err.message.starts_with("invalid YAML"), "{err}");
        assert!(err.line >= 2, "{err}");
    }

    #[test]
    fn file_size_is_bounded() {
        let limits = Limits {
            max_file_bytes: 8,
            ..Limits::DEFAULT
        };
        assert!(parse("a: 123456789\n", limits).is_err());
    }

    #[test]
    fn merge_keys_add_what_the_mapping_does_not_set() {
        let text = "base: &b {a: 1, c: 9}\nmore: &m {d: 4, a: 7}\none:\n  <<: *b\n  c: 2\nmany:\n  <<: [*b, *m]\n";
        let docs = parse(text, Limits::DEFAULT).expect("valid");
        let root = docs[0].root.as_ref().expect("root");
        let get = |map: &str, key: &str| {
            root.get(map)
                .and_then(|m| m.get(key))
                .and_then(Node::as_str)
                .map(str::to_owned)
        };
        assert_eq!(get("one", "a").as_deref(), Some("1"));
        assert_eq!(get("one", "c").as_deref(), Some("2"), "its own key wins");
        assert_eq!(
            get("many", "a").as_deref(),
            Some("1"),
            "the first mapping wins"
        );
        assert_eq!(get("many", "d").as_deref(), Some("4"));
        assert!(root.get("one").and_then(|m| m.get("<<")).is_none());
        let err = parse("a: &x 1\nb:\n  <<: *x\n", Limits::DEFAULT).expect_err("scalar");
        assert!(err.message.contains("merge key"), "{err}");
    }

    #[test]
    fn scanner_errors_are_said_in_words_at_the_line_of_the_mistake() {
        struct Case {
            text: &'static str,
            line: u32,
            says: &'static str,
        }
        for case in [
            Case {
                text: "spec:\n  selector\n    istio: x\n  servers: []\n",
                line: 2,
                says: "`selector` has no colon: write `selector:`",
            },
            Case {
                text: "spec:\n  host: a\n   subsets:\n  - name: v1\n",
                line: 3,
                says: "indented deeper than `host:` above it",
            },
            Case {
                text: "a:\n\tb: 1\n",
                line: 2,
                says: "tabs are not allowed in indentation",
            },
        ] {
            let err = parse(case.text, Limits::DEFAULT).expect_err("invalid");
            assert_eq!(err.line, case.line, "{}: {err}", case.text);
            assert!(err.message.contains(case.says), "{}: {err}", case.text);
        }
    }

    #[test]
    fn a_colon_glued_to_a_flow_indicator_stays_in_the_string_as_kubernetes_reads_it() {
        let docs = parse(
            "addresses: [1.2.3.4, 001:db8::]\npairs: [a: b]\nkeys: [a:, b]\nblock:\n- 001:db8::\n",
            Limits::DEFAULT,
        )
        .expect("valid");
        let root = docs[0].root.as_ref().expect("root");
        let items = |key: &str| match &root.get(key).expect(key).value {
            Value::Seq(items) => items.clone(),
            other => panic!("{key}: {other:?}"),
        };
        let texts = |key: &str| -> Vec<Option<String>> {
            items(key)
                .iter()
                .map(|n| n.as_str().map(str::to_owned))
                .collect()
        };
        assert_eq!(
            texts("addresses"),
            [Some("1.2.3.4".to_owned()), Some("001:db8::".to_owned())]
        );
        assert_eq!(texts("keys"), [Some("a:".to_owned()), Some("b".to_owned())]);
        // A colon followed by a space or a line break is a pair, in both
        // readings (quote an IPv6 address that ends a line).
        assert!(matches!(items("pairs")[0].value, Value::Map(_)));
        assert!(matches!(items("block")[0].value, Value::Map(_)));
    }
}
