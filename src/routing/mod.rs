//! Compile and look up routes. Pure: no I/O, no clock, no randomness, no
//! YAML. `compile` turns [`crate::config::Manifests`] into a [`RouteTable`];
//! [`SmoothWrr`] is the per-worker weighted picker.
#![forbid(unsafe_code)]

pub mod compile;
pub mod http;
pub mod names;
pub mod policy;
pub mod services;
pub mod table;
pub mod weighted;

pub use compile::{CompileOptions, Compiled, compile};
pub use table::RouteTable;
pub use weighted::SmoothWrr;
