//! A serde `Deserializer` over [`Node`] trees. Its errors know the field path
//! and the line they come from, and unknown fields or enum values come with a
//! "did you mean" hint, so a typo in a manifest reads like a compiler error.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::yaml::{Node, Plain, Value, resolve_plain};
use crate::diag::did_you_mean;

/// A deserialization error with the field path and line it was found at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError {
    pub path: Option<String>,
    pub line: Option<u32>,
    pub message: String,
    /// Set by `missing_field`: the name to append to the path once it is known.
    missing: Option<&'static str>,
}

impl DeError {
    /// An error found outside serde (the schema check), already located.
    pub fn at(path: &str, line: u32, message: String) -> DeError {
        DeError {
            path: Some(path.to_owned()),
            line: Some(line),
            message,
            missing: None,
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            path: None,
            line: None,
            message: msg.to_string(),
            missing: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let mut message = format!("unknown field {field:?}");
        match did_you_mean(field, expected) {
            Some(hint) => message.push_str(&format!(", did you mean {hint:?}?")),
            None => message.push_str(&format!("; valid fields: {}", expected.join(", "))),
        }
        Self::custom(message)
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut message = format!("unknown value {variant:?}");
        if let Some(hint) = did_you_mean(variant, expected) {
            message.push_str(&format!(", did you mean {hint:?}?"));
        }
        message.push_str(&format!(" (valid: {})", expected.join(", ")));
        Self::custom(message)
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            path: None,
            line: None,
            message: "required field is missing".to_owned(),
            missing: Some(field),
        }
    }
}

impl DeError {
    /// Attaches the location of the innermost node that failed, once.
    fn locate(mut self, path: &Path<'_>, line: u32) -> Self {
        if self.path.is_none() {
            let mut p = path.render();
            if let Some(field) = self.missing.take() {
                if !p.is_empty() {
                    p.push('.');
                }
                p.push_str(field);
            }
            self.path = Some(p);
            self.line = Some(line);
        }
        self
    }
}

/// A field path as a linked list on the stack: `spec.tcp[0].route`.
#[derive(Clone, Copy)]
pub enum Path<'a> {
    Root(&'a str),
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    pub fn render(&self) -> String {
        match self {
            Path::Root(name) => (*name).to_owned(),
            Path::Key(parent, key) => {
                let mut s = parent.render();
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(key);
                s
            }
            Path::Index(parent, i) => format!("{}[{i}]", parent.render()),
        }
    }
}

/// Deserializes `T` from `node`, naming `root` as the path of `node` and
/// `line` as its line (the line of the key that holds it).
pub fn from_node<'de, T: de::Deserialize<'de>>(
    node: &'de Node,
    root: &str,
    line: u32,
) -> Result<T, DeError> {
    let path = Path::Root(root);
    T::deserialize(NodeDe { node, path: &path }).map_err(|e| e.locate(&path, line))
}

struct NodeDe<'a, 'p> {
    node: &'a Node,
    path: &'p Path<'p>,
}

impl NodeDe<'_, '_> {
    fn mismatch(&self, expected: &str) -> DeError {
        de::Error::custom(format!(
            "expected {expected}, found {}",
            self.node.describe()
        ))
    }

    fn integer(&self, min: i128, max: i128) -> Result<i128, DeError> {
        match &self.node.value {
            Value::Scalar { text, plain: true } => match resolve_plain(text) {
                Plain::Int(v) if (min..=max).contains(&v) => Ok(v),
                Plain::Int(v) => Err(de::Error::custom(format!(
                    "{v} is out of range: expected an integer from {min} to {max}"
                ))),
                _ => Err(self.mismatch("an integer")),
            },
            _ => Err(self.mismatch("an integer")),
        }
    }
}

macro_rules! integer_method {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let v = self.integer(i128::from(<$ty>::MIN), i128::from(<$ty>::MAX))?;
            // The range check above makes the conversion lossless.
            visitor.$visit(<$ty>::try_from(v).map_err(de::Error::custom)?)
        }
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'de, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Scalar { text, plain: false } => visitor.visit_str(text),
            Value::Scalar { text, plain: true } => match resolve_plain(text) {
                Plain::Null => visitor.visit_unit(),
                Plain::Bool(b) => visitor.visit_bool(b),
                Plain::Int(i) => match i64::try_from(i) {
                    Ok(i) => visitor.visit_i64(i),
                    Err(_) => visitor.visit_str(text),
                },
                Plain::Float(f) => visitor.visit_f64(f),
                Plain::Str => visitor.visit_str(text),
            },
            Value::Seq(_) => self.deserialize_seq(visitor),
            Value::Map(_) => self.deserialize_map(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar { text, plain: true } => match resolve_plain(text) {
                Plain::Bool(b) => visitor.visit_bool(b),
                _ => Err(self.mismatch("true or false")),
            },
            _ => Err(self.mismatch("true or false")),
        }
    }

    integer_method!(deserialize_i8, visit_i8, i8);
    integer_method!(deserialize_i16, visit_i16, i16);
    integer_method!(deserialize_i32, visit_i32, i32);
    integer_method!(deserialize_i64, visit_i64, i64);
    integer_method!(deserialize_u8, visit_u8, u8);
    integer_method!(deserialize_u16, visit_u16, u16);
    integer_method!(deserialize_u32, visit_u32, u32);
    integer_method!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar { text, plain: true } => match resolve_plain(text) {
                Plain::Float(f) => visitor.visit_f64(f),
                #[allow(clippy::cast_precision_loss)]
                Plain::Int(i) => visitor.visit_f64(i as f64),
                _ => Err(self.mismatch("a number")),
            },
            _ => Err(self.mismatch("a number")),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    /// Any scalar reads as a string (`version: 1` is the label value "1"), as
    /// kubectl users expect; lists, mappings and null do not.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar { text, .. } => visitor.visit_str(text),
            _ => Err(self.mismatch("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => visitor.visit_unit(),
            _ => Err(self.mismatch("nothing (null)")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    /// A list; null (an empty `hosts:`) reads as an empty list, as in Kubernetes.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter(),
                index: 0,
                path: self.path,
            }),
            Value::Null => visitor.visit_seq(SeqDe {
                items: [].iter(),
                index: 0,
                path: self.path,
            }),
            _ => Err(self.mismatch("a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => visitor.visit_map(MapDe {
                entries,
                index: 0,
                path: self.path,
            }),
            Value::Null => visitor.visit_map(MapDe {
                entries: &[],
                index: 0,
                path: self.path,
            }),
            _ => Err(self.mismatch("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar { text, .. } => visitor.visit_enum(
                IntoDeserializer::<DeError>::into_deserializer(text.as_str()),
            ),
            _ => Err(self.mismatch(&format!("one of {}", variants.join(", ")))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct SeqDe<'a, 'p> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
    path: &'p Path<'p>,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let path = Path::Index(self.path, self.index);
        self.index += 1;
        seed.deserialize(NodeDe { node, path: &path })
            .map(Some)
            .map_err(|e| e.locate(&path, node.line))
    }
}

struct MapDe<'a, 'p> {
    entries: &'a [(Node, Node)],
    index: usize,
    path: &'p Path<'p>,
}

impl<'de> de::MapAccess<'de> for MapDe<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, _)) = self.entries.get(self.index) else {
            return Ok(None);
        };
        let name = key.as_str().unwrap_or("null");
        let path = Path::Key(self.path, name);
        seed.deserialize(NodeDe {
            node: key,
            path: &path,
        })
        .map(Some)
        .map_err(|e| e.locate(&path, key.line))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.entries.get(self.index) else {
            return Err(de::Error::custom("value without a key"));
        };
        self.index += 1;
        let path = Path::Key(self.path, key.as_str().unwrap_or("null"));
        seed.deserialize(NodeDe {
            node: value,
            path: &path,
        })
        // The key's line: where the field is named (a mapping value starts
        // on the line below it).
        .map_err(|e| e.locate(&path, key.line))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;
    use crate::config::yaml::{Limits, parse};

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Port {
        number: u16,
        name: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Spec {
        ports: Vec<Port>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[allow(clippy::upper_case_acronyms)]
    enum Mode {
        STATIC,
        DNS,
    }

    fn load(text: &str) -> Result<Spec, DeError> {
        let docs = parse(text, Limits::DEFAULT).expect("valid YAML");
        let root = docs[0].root.as_ref().expect("document");
        from_node::<Spec>(root, "spec", 1)
    }

    #[test]
    fn reads_a_valid_spec() {
        let spec = load("ports:\n- number: 9000\n  name: tcp\nlabels: {version: 1}\nmode: DNS\n")
            .expect("valid");
        assert_eq!(
            spec.ports,
            vec![Port {
                number: 9000,
                name: Some("tcp".into())
            }]
        );
        assert_eq!(spec.labels.get("version").map(String::as_str), Some("1"));
        assert_eq!(spec.mode, Some(Mode::DNS));
    }

    #[test]
    fn errors_carry_path_line_and_hint() {
        struct Case {
            text: &'static str,
            path: &'static str,
            line: u32,
            message: &'static str,
        }
        let cases = [
            Case {
                text: "ports:\n- number: 9000\n  nmae: tcp\n",
                path: "spec.ports[0].nmae",
                line: 3,
                message: "unknown field \"nmae\", did you mean \"name\"?",
            },
            Case {
                text: "ports:\n- number: abc\n",
                path: "spec.ports[0].number",
                line: 2,
                message: "expected an integer, found string \"abc\"",
            },
            Case {
                text: "ports:\n- number: 70000\n",
                path: "spec.ports[0].number",
                line: 2,
                message: "70000 is out of range: expected an integer from 0 to 65535",
            },
            Case {
                text: "ports:\n- name: tcp\n",
                path: "spec.ports[0].number",
                line: 2,
                message: "required field is missing",
            },
            Case {
                text: "ports: []\nmode: DSN\n",
                path: "spec.mode",
                line: 2,
                message: "unknown value \"DSN\", did you mean \"DNS\"? (valid: STATIC, DNS)",
            },
            Case {
                text: "ports: 9000\n",
                path: "spec.ports",
                line: 1,
                message: "expected a list, found number 9000",
            },
        ];
        for case in cases {
            let err = load(case.text).expect_err(case.text);
            assert_eq!(err.path.as_deref(), Some(case.path), "{}", case.text);
            assert_eq!(err.line, Some(case.line), "{}", case.text);
            assert_eq!(err.message, case.message, "{}", case.text);
        }
    }
}
