//! The control plane: admin HTTP endpoint, reload and signals. Runs on its
//! own threads and reaches workers only through the route table's ArcSwap
//! and their wake descriptors.
#![forbid(unsafe_code)]

pub mod admin;
pub mod reload;
pub mod server;
pub mod state;
