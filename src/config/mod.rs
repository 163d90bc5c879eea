//! The configuration as the operator wrote it: Istio-shaped serde model and
//! YAML loading. Owns strings, `Option`s and defaults; knows nothing of
//! sockets, rings or the compiled route table.
#![forbid(unsafe_code)]

pub mod de;
pub mod http;
pub mod load;
pub mod manifest;
pub mod resource;
pub mod schema;
pub mod yaml;

pub use load::{Kind, LoadOptions, Loaded, Manifests, Origin, Resource, load_documents, load_str};
