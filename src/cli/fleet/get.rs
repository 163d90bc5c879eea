//! `ringway get [Kind[/namespace[/name]]]`: the stored documents, as
//! applied, with their revisions.

use clap::Args;
use serde::Serialize;

use super::{Exit, Failure, StoreArgs, say, say_err};
use crate::fleet::Stored;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The texts as applied, each after `--- # <key> create_revision=..
    /// mod_revision=..`: `ringway apply -f` reads it back unchanged.
    Yaml,
    /// An array of {key, kind, namespace, name, create_revision,
    /// mod_revision, text}.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// What to print: a kind, a kind in a namespace, or one resource
    /// (VirtualService/default/tcp-echo); everything when left out.
    #[arg(value_name = "Kind[/namespace[/name]]", value_parser = parse_filter)]
    pub filter: Option<Filter>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
    pub output: Format,
    /// Read the store as it was at this revision (etcd keeps revisions
    /// until it compacts them).
    #[arg(long, value_name = "REV")]
    pub revision: Option<u64>,
}

/// `Kind[/namespace[/name]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Filter {
    fn matches(&self, stored: &Stored) -> bool {
        let Some(id) = &stored.id else { return false };
        id.kind == self.kind
            && self.namespace.as_ref().is_none_or(|ns| *ns == id.namespace)
            && self.name.as_ref().is_none_or(|n| *n == id.name)
    }
}

fn parse_filter(text: &str) -> Result<Filter, String> {
    let mut parts = text.split('/');
    let kind = super::delete::parse_kind(parts.next().unwrap_or_default())?;
    let namespace = parts.next().map(str::to_owned);
    let name = parts.next().map(str::to_owned);
    if parts.next().is_some() || namespace.as_deref() == Some("") || name.as_deref() == Some("") {
        return Err(format!(
            "{text:?} is not Kind[/namespace[/name]] (for example VirtualService/default/tcp-echo)"
        ));
    }
    Ok(Filter {
        kind: kind.as_str().to_owned(),
        namespace,
        name,
    })
}

pub fn run(args: &GetArgs) -> u8 {
    super::finish(get(args))
}

async fn get(args: &GetArgs) -> Result<Exit, Failure> {
    let mut store = super::Store::open(&args.store)?;
    let set = crate::fleet::store::read(&mut store.members, &store.keys, args.revision).await?;
    let found: Vec<&Stored> = set
        .resources
        .iter()
        .filter(|s| args.filter.as_ref().is_none_or(|f| f.matches(s)))
        .collect();
    if found.is_empty() {
        if let Some(Filter { name: Some(_), .. }) = &args.filter {
            let filter = args.filter.as_ref().map(describe).unwrap_or_default();
            return Err(Failure::invalid(format!(
                "{filter} is not in the store at revision {}",
                set.revision
            )));
        }
        say_err(&format!("no resources found (revision {})", set.revision));
    }
    match args.output {
        Format::Yaml if found.is_empty() => {}
        Format::Yaml => say(&render_yaml(&found)),
        Format::Json => say(&render_json(&found)),
    }
    Ok(Exit::Ok)
}

fn describe(filter: &Filter) -> String {
    [
        Some(filter.kind.as_str()),
        filter.namespace.as_deref(),
        filter.name.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("/")
}

fn render_yaml(found: &[&Stored]) -> String {
    let mut out = String::new();
    for stored in found {
        out.push_str(&format!(
            "--- # {} create_revision={} mod_revision={}\n",
            stored.key, stored.create_revision, stored.mod_revision
        ));
        out.push_str(&String::from_utf8_lossy(&stored.text));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[derive(Serialize)]
struct JsonDoc<'a> {
    key: &'a str,
    kind: Option<&'a str>,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    create_revision: u64,
    mod_revision: u64,
    text: String,
}

fn render_json(found: &[&Stored]) -> String {
    let docs: Vec<JsonDoc> = found
        .iter()
        .map(|s| JsonDoc {
            key: &s.key,
            kind: s.id.as_ref().map(|id| id.kind.as_str()),
            namespace: s.id.as_ref().map(|id| id.namespace.as_str()),
            name: s.id.as_ref().map(|id| id.name.as_str()),
            create_revision: s.create_revision,
            mod_revision: s.mod_revision,
            text: String::from_utf8_lossy(&s.text).into_owned(),
        })
        .collect();
    serde_json::to_string_pretty(&docs).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
