//! Who ringway is in Istio's metrics: a gateway reports as `source`, so its
//! own workload fills every `source_*` label. Set by flags with the
//! defaults of Istio's default ingress gateway (`istioctl install`:
//! workload `istio-ingressgateway` in `istio-system`, cluster
//! `Kubernetes`); `app`, `version` and the canonical service and revision
//! come from the instance's `--labels`, with Istio's fallbacks.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::Serialize;

/// Istio's value for a label nothing fills.
pub const UNKNOWN: &str = "unknown";
/// Istio's canonical revision when no label gives one.
pub const LATEST: &str = "latest";

/// The labels Istio reads a workload's canonical service from, in order.
const CANONICAL_NAME: [&str; 3] = [
    "service.istio.io/canonical-name",
    "app.kubernetes.io/name",
    "app",
];
/// The labels Istio reads a workload's canonical revision from, in order.
const CANONICAL_REVISION: [&str; 3] = [
    "service.istio.io/canonical-revision",
    "app.kubernetes.io/version",
    "version",
];

/// The canonical service of a workload with `labels` (its name when no
/// label gives one, else `unknown`).
pub fn canonical_service(labels: &BTreeMap<String, String>, workload: Option<&str>) -> String {
    CANONICAL_NAME
        .iter()
        .find_map(|k| labels.get(*k))
        .map(String::as_str)
        .or(workload)
        .unwrap_or(UNKNOWN)
        .to_owned()
}

/// The canonical revision of a workload with `labels` (`latest` when no
/// label gives one).
pub fn canonical_revision(labels: &BTreeMap<String, String>) -> String {
    CANONICAL_REVISION
        .iter()
        .find_map(|k| labels.get(*k))
        .map_or(LATEST, String::as_str)
        .to_owned()
}

/// A label's value, or `unknown`.
pub fn label_or_unknown(labels: &BTreeMap<String, String>, key: &str) -> String {
    labels.get(key).map_or(UNKNOWN, String::as_str).to_owned()
}

/// This gateway as the `source_*` labels name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub workload: String,
    pub workload_namespace: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    pub cluster: String,
}

impl Identity {
    /// The defaults of Istio's default ingress gateway.
    pub const WORKLOAD: &'static str = "istio-ingressgateway";
    pub const NAMESPACE: &'static str = "istio-system";
    pub const CLUSTER: &'static str = "Kubernetes";

    /// A gateway named `workload` in `namespace` of cluster `cluster`,
    /// whose instance carries `labels` (`--labels`).
    pub fn new(
        workload: &str,
        namespace: &str,
        cluster: &str,
        labels: &BTreeMap<String, String>,
    ) -> Identity {
        Identity {
            workload: workload.to_owned(),
            workload_namespace: namespace.to_owned(),
            app: label_or_unknown(labels, "app"),
            version: label_or_unknown(labels, "version"),
            canonical_service: canonical_service(labels, Some(workload)),
            canonical_revision: canonical_revision(labels),
            cluster: cluster.to_owned(),
        }
    }
}

impl Default for Identity {
    fn default() -> Identity {
        let labels = BTreeMap::from([("istio".to_owned(), "ingressgateway".to_owned())]);
        Identity::new(
            Identity::WORKLOAD,
            Identity::NAMESPACE,
            Identity::CLUSTER,
            &labels,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_default_gateway_falls_back_to_its_workload_name_and_latest() {
        let id = Identity::default();
        assert_eq!(id.workload, "istio-ingressgateway");
        assert_eq!(id.workload_namespace, "istio-system");
        assert_eq!(id.cluster, "Kubernetes");
        assert_eq!(
            (id.app.as_str(), id.version.as_str()),
            ("unknown", "unknown")
        );
        assert_eq!(id.canonical_service, "istio-ingressgateway");
        assert_eq!(id.canonical_revision, "latest");
    }

    #[test]
    fn canonical_labels_win_over_app_and_version() {
        let l = labels(&[
            ("app", "gw"),
            ("version", "v3"),
            ("service.istio.io/canonical-name", "edge"),
            ("service.istio.io/canonical-revision", "r7"),
        ]);
        let id = Identity::new("edge-gw", "ingress", "east", &l);
        assert_eq!((id.app.as_str(), id.version.as_str()), ("gw", "v3"));
        assert_eq!(id.canonical_service, "edge");
        assert_eq!(id.canonical_revision, "r7");
        // Without the canonical labels: app.kubernetes.io/*, then app and version.
        let l = labels(&[("app", "gw"), ("app.kubernetes.io/version", "2.1")]);
        assert_eq!(canonical_service(&l, None), "gw");
        assert_eq!(canonical_revision(&l), "2.1");
        assert_eq!(canonical_service(&BTreeMap::new(), None), "unknown");
    }
}
