//! SPEC §7: nothing a configuration file holds may crash ringway. Random
//! text, mutated real manifests and the classic YAML bombs all end in a
//! diagnostic, never a panic, and in bounded time.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use ringway::config::{LoadOptions, load_str};
use ringway::diag::Severity;
use ringway::routing::{CompileOptions, compile};

/// Loads and compiles `text`; returns whether it was accepted.
fn check(text: &str) -> bool {
    let loaded = load_str("fuzz.yaml", text, &LoadOptions::default());
    if loaded.diagnostics.has_errors() {
        return false;
    }
    !compile(&loaded.manifests, &CompileOptions::default())
        .diagnostics
        .has_errors()
}

fn example() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut text = String::new();
    for name in [
        "tcp-echo/00-service-entry.yaml",
        "tcp-echo/10-tcp-echo-all-v1.yaml",
        "kafka-rcmd.yaml",
    ] {
        text.push_str(&std::fs::read_to_string(dir.join(name)).expect("example"));
        text.push_str("\n---\n");
    }
    text
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    Indent(usize, usize),
    ReplaceByte(usize, u8),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), 0usize..6).prop_map(|(l, n)| Mutation::Indent(l, n)),
        (
            any::<usize>(),
            prop::sample::select(b"-:{}[]&*!|>'\"#, 0v9\n\t".to_vec())
        )
            .prop_map(|(i, b)| Mutation::ReplaceByte(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for m in mutations {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match *m {
            Mutation::DeleteLine(i) => {
                lines.remove(i % n);
            }
            Mutation::DuplicateLine(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::Indent(i, k) => lines[i % n].insert_str(0, &" ".repeat(k)),
            Mutation::ReplaceByte(i, b) => {
                let line = &mut lines[i % n];
                if !line.is_empty() {
                    let at = (i / n) % line.len();
                    if line.is_char_boundary(at) && line.is_char_boundary(at + 1) {
                        line.replace_range(at..=at, &char::from(b).to_string());
                    }
                }
            }
            Mutation::Truncate(i) => lines.truncate(i % n),
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,400}") {
        check(&text);
    }

    #[test]
    fn yaml_shaped_noise_never_panics(
        parts in prop::collection::vec(
            prop::sample::select(vec![
                "apiVersion: networking.istio.io/v1\n", "kind: Gateway\n", "kind: VirtualService\n",
                "kind: DestinationRule\n", "kind: ServiceEntry\n", "kind: WorkloadEntry\n",
                "metadata: {name: x}\n", "spec:\n", "  servers:\n", "  - port: {number: 1, name: a, protocol: TCP}\n",
                "    hosts: ['*']\n", "  tcp:\n", "  - route:\n", "    - destination: {host: x, subset: v1}\n",
                "      weight: 5\n", "  hosts: [x]\n", "  gateways: [x]\n", "  resolution: STATIC\n",
                "  endpoints: [{address: 1.2.3.4}]\n", "  ports: [{number: 1, name: a}]\n", "---\n",
                "  &a [*a]\n", "  key: *undefined\n", "  - [[[[\n", "  : :\n", "  ? complex\n",
            ]),
            0..40,
        )
    ) {
        check(&parts.concat());
    }

    #[test]
    fn mutated_real_manifests_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        check(&apply(&example(), &mutations));
    }
}

#[test]
fn the_unmutated_example_is_accepted() {
    // The mutation test above starts from a valid configuration.
    assert!(check(&example()));
}

fn first_error(text: &str) -> String {
    let loaded = load_str("bomb.yaml", text, &LoadOptions::default());
    loaded
        .diagnostics
        .iter()
        .find(|d| d.severity == Severity::Error)
        .map(ToString::to_string)
        .unwrap_or_else(|| panic!("no error for hostile input"))
}

#[test]
fn deep_nesting_is_rejected_quickly() {
    let start = Instant::now();
    for text in [
        "[".repeat(200_000),
        "a:\n".to_owned()
            + &(1..200)
                .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                .collect::<String>(),
    ] {
        let e = first_error(&text);
        assert!(
            e.contains("nesting deeper than 64 levels") || e.contains("recursion"),
            "{e}"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn alias_bombs_are_rejected_quickly() {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let start = Instant::now();
    let e = first_error(&text);
    assert!(e.contains("more than 1000000 YAML nodes"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn huge_files_are_rejected_before_parsing() {
    let text = format!("# {}\n", "x".repeat(17 << 20));
    let e = first_error(&text);
    assert!(e.contains("more than the limit of 16777216 bytes"), "{e}");
}

#[test]
fn an_anchor_can_still_be_used_normally() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec:
  hosts: [a.default.svc.cluster.local]
  resolution: STATIC
  ports: &ports [{number: 9000, name: tcp}]
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b}
spec:
  hosts: [b.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 9000, name: tcp}]
  endpoints: [{address: 127.0.0.2}]
";
    let loaded = load_str("anchors.yaml", text, &LoadOptions::default());
    assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.manifests.service_entries.len(), 2);
}
