//! Istio's networking API as a list of messages, fields and enums
//! (`config/istio-api/fields.txt`, derived from istio/api's protos by
//! `scripts/istio-fields.py`), and a check of every document's `spec`
//! against it before the typed model reads it.
//!
//! The check is what makes every part of a manifest type-checked, the parts
//! ringway acts on and the parts it accepts without acting on (a
//! DestinationRule's `tls`, `warmup`, an HTTP route...): an unknown field
//! anywhere is an error with a "did you mean", every one of them is
//! reported (not just the first), and so is an enum value or a number that
//! Istio would refuse. Scalars are checked as protobuf's JSON mapping reads
//! them: integers may be quoted, enums may be names or numbers.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::de::DeError;
use super::yaml::{Node, Plain, Value, resolve_plain};
use crate::diag::did_you_mean;

/// The list, as checked in.
pub const FIELDS: &str = include_str!("../../config/istio-api/fields.txt");

/// A field's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    String,
    Bool,
    Int,
    Double,
    /// `google.protobuf.Duration`: Go's duration syntax, as Istio reads it.
    Duration,
    Enum(&'static str),
    Message(&'static str),
    Repeated(Box<Type>),
    /// `map<string, V>`.
    Map(Box<Type>),
}

#[derive(Debug, Default)]
pub struct Schema {
    /// Message → its fields in proto order: (JSON name, type).
    pub messages: HashMap<&'static str, Vec<(&'static str, Type)>>,
    pub enums: HashMap<&'static str, Vec<&'static str>>,
}

/// The schema of [`FIELDS`], parsed once.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| parse(FIELDS))
}

fn scalar(name: &str) -> Option<Type> {
    Some(match name {
        "string" | "bytes" => Type::String,
        "bool" | "google.protobuf.BoolValue" => Type::Bool,
        "int32"
        | "int64"
        | "uint32"
        | "uint64"
        | "sint32"
        | "sint64"
        | "fixed32"
        | "fixed64"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.Int64Value" => Type::Int,
        "double" | "float" | "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => {
            Type::Double
        }
        "google.protobuf.Duration" => Type::Duration,
        _ => return None,
    })
}

/// Parses the list. Its format is the generator's: `message NAME`, indented
/// `field TYPE` lines, `enum NAME VALUE...`; `#` starts a comment line.
pub fn parse(text: &'static str) -> Schema {
    let mut schema = Schema::default();
    let mut enums = Vec::new();
    let mut current: Option<&'static str> = None;
    let mut raw: Vec<(&'static str, &'static str, &'static str)> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("message ") {
            current = Some(name.trim());
            schema.messages.entry(name.trim()).or_default();
        } else if let Some(rest) = line.strip_prefix("enum ") {
            let mut words = rest.split_whitespace();
            if let Some(name) = words.next() {
                enums.push(name);
                schema.enums.insert(name, words.collect());
            }
        } else if let (Some(message), Some(rest)) = (current, line.strip_prefix("  ")) {
            if let Some((name, ty)) = rest.split_once(' ') {
                raw.push((message, name, ty.trim()));
            }
        }
    }
    for (message, name, ty) in raw {
        let ty = resolve(&schema, ty);
        if let Some(fields) = schema.messages.get_mut(message) {
            fields.push((name, ty));
        }
    }
    schema
}

fn resolve(schema: &Schema, text: &'static str) -> Type {
    if let Some(inner) = text.strip_prefix("repeated ") {
        return Type::Repeated(Box::new(resolve(schema, inner)));
    }
    if let Some(inner) = text
        .strip_prefix("map<string,")
        .and_then(|t| t.strip_suffix('>'))
    {
        return Type::Map(Box::new(resolve(schema, inner)));
    }
    if let Some(t) = scalar(text) {
        return t;
    }
    if let Some((name, _)) = schema.enums.get_key_value(text) {
        return Type::Enum(name);
    }
    Type::Message(text)
}

/// Checks `node` (the `spec` of a document, at `path`) as a `message`;
/// every problem found, each with its field path and line.
pub fn check(node: &Node, message: &'static str, path: &str) -> Vec<DeError> {
    let mut problems = Vec::new();
    Checker {
        schema: schema(),
        problems: &mut problems,
    }
    .value(node, &Type::Message(message), path);
    problems
}

struct Checker<'a> {
    schema: &'static Schema,
    problems: &'a mut Vec<DeError>,
}

impl Checker<'_> {
    fn problem(&mut self, path: &str, line: u32, message: String) {
        self.problems.push(DeError::at(path, line, message));
    }

    fn value(&mut self, node: &Node, ty: &Type, path: &str) {
        if node.value == Value::Null {
            return;
        }
        match ty {
            Type::Message(name) => self.message(node, name, path),
            Type::Repeated(item) => match &node.value {
                Value::Seq(items) => {
                    for (i, item_node) in items.iter().enumerate() {
                        self.value(item_node, item, &format!("{path}[{i}]"));
                    }
                }
                _ => self.problem(
                    path,
                    node.line,
                    format!("expected a list, found {}", node.describe()),
                ),
            },
            Type::Map(value) => match &node.value {
                Value::Map(entries) => {
                    for (key, v) in entries {
                        let key = key.as_str().unwrap_or("null");
                        self.value(v, value, &format!("{path}.{key}"));
                    }
                }
                _ => self.problem(
                    path,
                    node.line,
                    format!("expected a mapping, found {}", node.describe()),
                ),
            },
            Type::Enum(name) => self.enumeration(node, name, path),
            scalar => self.scalar(node, scalar, path),
        }
    }

    fn message(&mut self, node: &Node, name: &'static str, path: &str) {
        let Some(fields) = self.schema.messages.get(name) else {
            return;
        };
        let Value::Map(entries) = &node.value else {
            self.problem(
                path,
                node.line,
                format!("expected a mapping, found {}", node.describe()),
            );
            return;
        };
        for (key, value) in entries {
            let key_text = key.as_str().unwrap_or("null");
            let field_path = format!("{path}.{key_text}");
            match fields.iter().find(|(f, _)| *f == key_text) {
                Some((_, ty)) => self.value(value, ty, &field_path),
                None => {
                    let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
                    let mut message = format!("unknown field {key_text:?}");
                    match did_you_mean(key_text, &names) {
                        Some(hint) => message.push_str(&format!(", did you mean {hint:?}?")),
                        None => message.push_str(&format!("; valid fields: {}", names.join(", "))),
                    }
                    self.problem(&field_path, key.line, message);
                }
            }
        }
    }

    fn enumeration(&mut self, node: &Node, name: &'static str, path: &str) {
        let values = self.schema.enums.get(name).map_or(&[][..], Vec::as_slice);
        let ok = match &node.value {
            Value::Scalar { text, plain } => {
                values.contains(&text.as_str())
                    || (*plain && matches!(resolve_plain(text), Plain::Int(_)))
            }
            _ => false,
        };
        if !ok {
            let shown = node.as_str().unwrap_or_default();
            let mut message = format!("unknown value {}", node.describe());
            if let Some(hint) = did_you_mean(shown, values) {
                message.push_str(&format!(", did you mean {hint:?}?"));
            }
            message.push_str(&format!(" (valid: {})", values.join(", ")));
            self.problem(path, node.line, message);
        }
    }

    fn scalar(&mut self, node: &Node, ty: &Type, path: &str) {
        let Value::Scalar { text, plain } = &node.value else {
            let want = match ty {
                Type::Bool => "a boolean",
                Type::Int => "an integer",
                Type::Double => "a number",
                Type::Duration => "a duration such as 5s or 100ms",
                _ => "a string",
            };
            self.problem(
                path,
                node.line,
                format!("expected {want}, found {}", node.describe()),
            );
            return;
        };
        if *ty == Type::Duration {
            // Istio reads Go's duration syntax; parse_duration says why not.
            if let Err(why) = super::manifest::parse_duration(text) {
                self.problem(path, node.line, why);
            }
            return;
        }
        let resolved = if *plain {
            resolve_plain(text)
        } else {
            Plain::Str
        };
        let problem = match ty {
            Type::Bool if !matches!(resolved, Plain::Bool(_)) => Some("a boolean (true or false)"),
            // Protobuf's JSON mapping takes integers quoted or not.
            Type::Int
                if !matches!(resolved, Plain::Int(_)) && text.trim().parse::<i128>().is_err() =>
            {
                Some("an integer")
            }
            Type::Double
                if !matches!(resolved, Plain::Int(_) | Plain::Float(_))
                    && text.trim().parse::<f64>().is_err() =>
            {
                Some("a number")
            }
            _ => None,
        };
        if let Some(want) = problem {
            self.problem(
                path,
                node.line,
                format!("expected {want}, found {}", node.describe()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::{Limits, parse as parse_yaml};

    fn problems(message: &'static str, text: &str) -> Vec<String> {
        let documents = parse_yaml(text, Limits::DEFAULT).expect("YAML");
        let root = documents[0].root.as_ref().expect("a document");
        check(root, message, "spec")
            .into_iter()
            .map(|e| {
                format!(
                    "{}:{}: {}",
                    e.line.unwrap_or(0),
                    e.path.unwrap_or_default(),
                    e.message
                )
            })
            .collect()
    }

    #[test]
    fn the_list_holds_the_five_kinds_and_what_they_reach() {
        let s = schema();
        for kind in [
            "Gateway",
            "VirtualService",
            "DestinationRule",
            "ServiceEntry",
            "WorkloadEntry",
        ] {
            assert!(s.messages.contains_key(kind), "{kind}");
        }
        let tls = &s.messages["ServerTLSSettings"];
        for field in [
            "caCertCredentialName",
            "insecureSkipVerify",
            "credentialNames",
        ] {
            assert!(tls.iter().any(|(f, _)| *f == field), "{field}");
        }
        // Every message a field names is in the list.
        for (message, fields) in &s.messages {
            for (field, ty) in fields {
                let mut t = ty;
                while let Type::Repeated(inner) | Type::Map(inner) = t {
                    t = inner;
                }
                if let Type::Message(name) = t {
                    assert!(s.messages.contains_key(name), "{message}.{field}: {name}");
                }
            }
        }
    }

    #[test]
    fn every_unknown_field_is_reported_with_its_line_and_a_hint() {
        let found = problems(
            "DestinationRule",
            "host: a\ntrafficPolicy:\n  tls:\n    mode: SIMPL\n    sin: x\n  loadBalancer:\n    zoneAwareLbSetting: {enabled: true}\n    warmup: {duraton: 5s}\nsubsets:\n- name: v1\n  lables: {a: b}\n",
        );
        assert_eq!(
            found,
            [
                "4:spec.trafficPolicy.tls.mode: unknown value string \"SIMPL\", did you mean \"SIMPLE\"? (valid: DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL)",
                "5:spec.trafficPolicy.tls.sin: unknown field \"sin\", did you mean \"sni\"?",
                "8:spec.trafficPolicy.loadBalancer.warmup.duraton: unknown field \"duraton\", did you mean \"duration\"?",
                "11:spec.subsets[0].lables: unknown field \"lables\", did you mean \"labels\"?",
            ]
        );
    }

    #[test]
    fn scalars_are_read_as_protobufs_json_mapping_reads_them() {
        struct Case {
            text: &'static str,
            ok: bool,
        }
        for case in [
            Case {
                text: "port: {number: 80, name: a, protocol: HTTP}",
                ok: true,
            },
            Case {
                text: "port: {number: \"80\", name: a, protocol: HTTP}",
                ok: true,
            },
            Case {
                text: "port: {number: eighty, name: a, protocol: HTTP}",
                ok: false,
            },
            Case {
                text: "port: {number: [80], name: a, protocol: HTTP}",
                ok: false,
            },
            Case {
                text: "tls: {httpsRedirect: true}",
                ok: true,
            },
            Case {
                text: "tls: {httpsRedirect: sure}",
                ok: false,
            },
            Case {
                text: "tls: {mode: 1}",
                ok: true,
            },
            Case {
                text: "hosts: [a, b]",
                ok: true,
            },
            Case {
                text: "hosts: a",
                ok: false,
            },
        ] {
            let found = problems("Server", case.text);
            assert_eq!(found.is_empty(), case.ok, "{}: {found:?}", case.text);
        }
        assert!(problems("OutlierDetection", "interval: 5m\nbaseEjectionTime: 100ms").is_empty());
        assert_eq!(
            problems("OutlierDetection", "interval: soon"),
            [
                "1:spec.interval: bad duration \"soon\": expected a number (valid: 10s, 500ms, 1m30s, 1h)"
            ]
        );
    }

    /// A deserializer that answers only the question "which fields does
    /// this struct accept?" (serde passes them to `deserialize_struct`).
    struct Probe;

    #[derive(Debug)]
    struct Fields(&'static [&'static str]);

    impl std::fmt::Display for Fields {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }

    impl std::error::Error for Fields {}

    impl serde::de::Error for Fields {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Fields(&[])
        }
    }

    impl<'de> serde::Deserializer<'de> for Probe {
        type Error = Fields;

        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }

        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    fn accepted<T: serde::de::DeserializeOwned>() -> Vec<&'static str> {
        match T::deserialize(Probe) {
            Err(Fields(fields)) => fields.to_vec(),
            Ok(_) => Vec::new(),
        }
    }

    /// The typed model accepts exactly the fields Istio's protos define:
    /// a field Istio adds (and `scripts/istio-fields.py` brings into the
    /// list) fails here until the model has it.
    #[test]
    fn the_typed_model_accepts_exactly_the_fields_of_the_protos() {
        use crate::config::manifest::*;
        let model: Vec<(&str, Vec<&str>)> = vec![
            ("Gateway", accepted::<GatewaySpec>()),
            ("Server", accepted::<Server>()),
            ("Port", accepted::<ServerPort>()),
            ("ServerTLSSettings", accepted::<ServerTls>()),
            ("VirtualService", accepted::<VirtualServiceSpec>()),
            ("TCPRoute", accepted::<TcpRoute>()),
            ("L4MatchAttributes", accepted::<L4Match>()),
            ("TLSRoute", accepted::<TlsRoute>()),
            ("TLSMatchAttributes", accepted::<TlsMatch>()),
            ("RouteDestination", accepted::<RouteDestination>()),
            ("Destination", accepted::<Destination>()),
            ("PortSelector", accepted::<PortSelector>()),
            ("DestinationRule", accepted::<DestinationRuleSpec>()),
            ("Subset", accepted::<Subset>()),
            ("TrafficPolicy", accepted::<TrafficPolicy>()),
            (
                "TrafficPolicy.PortTrafficPolicy",
                accepted::<PortTrafficPolicy>(),
            ),
            ("LoadBalancerSettings", accepted::<LoadBalancer>()),
            (
                "LoadBalancerSettings.ConsistentHashLB",
                accepted::<ConsistentHash>(),
            ),
            ("ConnectionPoolSettings", accepted::<ConnectionPool>()),
            (
                "ConnectionPoolSettings.TCPSettings",
                accepted::<TcpSettings>(),
            ),
            (
                "ConnectionPoolSettings.TCPSettings.TcpKeepalive",
                accepted::<TcpKeepalive>(),
            ),
            ("OutlierDetection", accepted::<OutlierDetection>()),
            ("TrafficPolicy.ProxyProtocol", accepted::<ProxyProtocol>()),
            ("ClientTLSSettings", accepted::<ClientTls>()),
            ("ServiceEntry", accepted::<ServiceEntrySpec>()),
            ("ServicePort", accepted::<ServicePort>()),
            ("WorkloadEntry", accepted::<WorkloadEntrySpec>()),
            ("WorkloadSelector", accepted::<WorkloadSelector>()),
        ];
        let mut drift = Vec::new();
        for (message, fields) in model {
            let mut ours: Vec<&str> = fields;
            let mut protos: Vec<&str> =
                schema().messages[message].iter().map(|(f, _)| *f).collect();
            ours.sort_unstable();
            protos.sort_unstable();
            if ours != protos {
                let missing: Vec<_> = protos.iter().filter(|f| !ours.contains(f)).collect();
                let extra: Vec<_> = ours.iter().filter(|f| !protos.contains(f)).collect();
                drift.push(format!(
                    "{message}: missing {missing:?}, not in the protos {extra:?}"
                ));
            }
        }
        assert!(
            drift.is_empty(),
            "the model drifted from the protos:\n{}",
            drift.join("\n")
        );
    }
}
