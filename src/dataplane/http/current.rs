//! What the worker asks of the current request, and tells it: its plan,
//! its hash key, its places under the cluster's caps, its cluster and the
//! endpoints tried, and its report once it ended.
#![forbid(unsafe_code)]

use std::sync::Arc;

use crate::routing::table::{ClusterId, RequestHashKey, RouteId};

use super::super::io::Cap;
use super::super::plan::Plan;
use super::super::pool::Held;
use super::{HttpSession, Request};

impl HttpSession {
    /// The finished request the worker reports ([`Io::Report`]).
    pub fn take_report(&mut self) -> Option<Box<Request>> {
        self.done.take()
    }

    /// The plan of the current request.
    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// The hash of the current request's `consistentHash` key, when it
    /// carries it.
    pub fn request_hash(&self, key: &RequestHashKey) -> Option<u64> {
        self.request.as_ref()?.hash(key)
    }

    /// Whether the current request holds its place under `cap`.
    pub fn holds_cap(&self, cap: Cap) -> bool {
        self.request
            .as_ref()
            .is_some_and(|r| r.caps[cap.index()].is_some())
    }

    /// The current request's place under `cap`, held until it ends.
    pub fn hold_cap(&mut self, cap: Cap, held: Held) {
        if let Some(r) = self.request.as_mut() {
            r.caps[cap.index()] = Some(held);
        }
    }

    /// Whether the current request is being sent again.
    pub fn is_retry(&self) -> bool {
        self.request.as_ref().is_some_and(|r| r.is_retry())
    }

    /// The worker picked the current request's cluster.
    pub fn on_cluster(&mut self, cluster: ClusterId) {
        if let Some(r) = self.request.as_mut() {
            r.cluster = Some(cluster);
        }
    }

    /// The route and cluster the current request goes to.
    pub fn target(&self) -> Option<(RouteId, Option<ClusterId>)> {
        let req = self.request.as_ref()?;
        Some((req.forwarding?.clusters, req.cluster))
    }

    pub fn tried(&self) -> &[usize] {
        self.request.as_ref().map_or(&[], |r| &r.tried)
    }

    pub fn connecting_to(&mut self, endpoint: usize) {
        if let Some(r) = self.request.as_mut() {
            r.tried.push(endpoint);
        }
    }
}
