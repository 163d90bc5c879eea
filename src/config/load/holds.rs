//! A store keeps one resource per key (`crate::fleet`): the text under a
//! key must define exactly the resource the key names. Checked by the
//! loader for every document bound to a key ([`crate::source::Holds`]).

use super::super::Kind;
use crate::diag::{Diagnostic, Location};
use crate::source;

/// The error when the text under a key defines anything but the resource
/// the key names (another name, a second resource, a kind ringway does
/// not read); `None` when it defines just that one, or when the text
/// already had errors of its own (they say enough).
pub(super) fn check(
    from: &source::Origin,
    holds: &source::Holds,
    defined: &[(Kind, String, String)],
    had_errors: bool,
) -> Option<Diagnostic> {
    let named = format!("{} {}/{}", holds.kind, holds.namespace, holds.name);
    let found: Vec<String> = defined
        .iter()
        .map(|(kind, ns, name)| format!("{kind} {ns}/{name}"))
        .collect();
    let message = match found.as_slice() {
        [one] if *one == named => return None,
        [] if had_errors => return None,
        [] => format!(
            "the key names {named} but its value defines no resource ringway reads; \
             one key holds one Istio networking resource"
        ),
        [one] => format!(
            "the key names {named} but its value defines {one}; \
             a resource is stored under <Kind>/<namespace>/<name> (ringway apply writes it so)"
        ),
        many => format!(
            "the key names {named} but its value defines {} resources ({}); \
             one key holds one resource",
            many.len(),
            many.join(", ")
        ),
    };
    Some(
        Diagnostic::error(message)
            .at(Location {
                file: from.to_string().into(),
                document: 1,
                line: 1,
            })
            .resource(named),
    )
}

#[cfg(test)]
mod tests {
    use crate::config::load::{LoadOptions, load_documents};
    use crate::source::{Content, Document, Holds, Origin};

    fn stored(key_name: &str, text: &str) -> Document {
        Document {
            origin: Origin::Etcd {
                key: format!("/p/v1/config/ServiceEntry/default/{key_name}").into(),
                revision: 7,
            },
            content: Content::Text(text.as_bytes().into()),
            holds: Some(Holds {
                kind: "ServiceEntry".into(),
                namespace: "default".into(),
                name: key_name.into(),
            }),
        }
    }

    const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: s\n\
                      spec:\n  hosts: [a.example]\n  resolution: STATIC\n  ports: [{number: 1, name: t, protocol: TCP}]\n  endpoints: [{address: 127.0.0.1}]\n";

    #[test]
    fn a_key_holds_exactly_the_resource_it_names() {
        let ok = load_documents(&[stored("s", SE)], &LoadOptions::default());
        assert!(!ok.diagnostics.has_errors(), "{:?}", ok.diagnostics);
        let other = load_documents(&[stored("t", SE)], &LoadOptions::default());
        let errors: Vec<String> = other
            .diagnostics
            .errors()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("etcd:/p/v1/config/ServiceEntry/default/t@7:1:")
                && errors[0].contains(
                    "names ServiceEntry default/t but its value defines ServiceEntry default/s"
                ),
            "{errors:?}"
        );
        let two = format!("{SE}---\n{}", SE.replace("name: s", "name: t"));
        let errors: Vec<String> = load_documents(&[stored("s", &two)], &LoadOptions::default())
            .diagnostics
            .errors()
            .map(ToString::to_string)
            .collect();
        assert!(
            errors.iter().any(|e| e.contains("defines 2 resources")),
            "{errors:?}"
        );
        let none = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n";
        let errors: Vec<String> = load_documents(&[stored("s", none)], &LoadOptions::default())
            .diagnostics
            .errors()
            .map(ToString::to_string)
            .collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("defines no resource ringway reads")),
            "{errors:?}"
        );
    }
}
