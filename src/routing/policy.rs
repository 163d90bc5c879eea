//! DestinationRule traffic policies: validated once per DestinationRule, then
//! merged per cluster the way Istio merges them. Subset and port-level
//! policies replace whole blocks (loadBalancer, connectionPool,
//! outlierDetection); they never deep-merge, and a port-level entry resets the
//! blocks it leaves out to their defaults.

use std::time::Duration;

use crate::config::Resource;
use crate::config::manifest::{
    self, ConnectionPool, DestinationRuleSpec, Labels, SimpleLb, TrafficPolicy,
};
use crate::diag::{Diagnostics, Severity};

use super::table::{
    ClusterPolicy, DEFAULT_IDLE_TIMEOUT, Keepalive, LoadBalancer, OutlierDetection, ProxyProtocol,
    RequestHashKey, UNLIMITED_CONNECTIONS,
};

mod http;

/// A `loadBalancer` block as validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Balance {
    Use(LoadBalancer),
    /// `consistentHash` by a request property.
    Hash(RequestHashKey),
    /// `simple: PASSTHROUGH`: connect to the original destination, which at
    /// a gateway is the gateway itself. Valid Istio, so only a route that it
    /// applies to is refused.
    Passthrough,
}

/// What a destination cannot be served with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unservable {
    Passthrough,
    /// `tls.mode` SIMPLE, MUTUAL or ISTIO_MUTUAL: Istio encrypts to the
    /// upstream; ringway would send plaintext, so it refuses instead.
    TlsOrigination(manifest::ClientTlsMode),
}

/// The blocks a policy level may replace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Blocks {
    pub load_balancer: Option<Balance>,
    /// `tls.mode`, when the level sets one.
    pub tls: Option<manifest::ClientTlsMode>,
    pub pool: Option<Pool>,
    pub outlier: Option<OutlierDetection>,
}

/// `connectionPool.tcp` and `.http`, validated.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pool {
    pub http: http::HttpPool,
    pub max_connections: Option<u32>,
    pub connect_timeout: Option<Duration>,
    pub keepalive: Option<Keepalive>,
    pub idle_timeout: Option<Duration>,
    pub max_connection_duration: Option<Duration>,
}

/// One `trafficPolicy`: its blocks, its PROXY protocol and its port levels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Level {
    pub blocks: Blocks,
    pub proxy_protocol: Option<ProxyProtocol>,
    pub ports: Vec<(u16, Blocks)>,
}

impl Level {
    fn port(&self, port: u16) -> Option<&Blocks> {
        self.ports.iter().find(|(p, _)| *p == port).map(|(_, b)| b)
    }
}

#[derive(Debug, Clone)]
pub struct SubsetPolicy {
    pub name: String,
    pub labels: Labels,
    pub policy: Option<Level>,
}

/// A DestinationRule after validation.
#[derive(Debug, Clone)]
pub struct RulePolicy {
    /// `DestinationRule namespace/name`.
    pub id: String,
    pub top: Level,
    pub subsets: Vec<SubsetPolicy>,
}

impl RulePolicy {
    pub fn subset(&self, name: &str) -> Option<&SubsetPolicy> {
        self.subsets.iter().find(|s| s.name == name)
    }

    pub fn subset_names(&self) -> Vec<&str> {
        self.subsets.iter().map(|s| s.name.as_str()).collect()
    }

    /// The policy of the cluster for `port` and `subset`:
    /// top level, replaced by its port level, overridden block by block by
    /// the subset, replaced by the subset's port level.
    pub fn cluster_policy(
        &self,
        port: u16,
        subset: Option<&str>,
    ) -> Result<ClusterPolicy, Unservable> {
        let mut blocks = self.top.blocks.clone();
        if let Some(port_blocks) = self.top.port(port) {
            blocks = port_blocks.clone();
        }
        let mut proxy = self.top.proxy_protocol;
        if let Some(sub) = subset
            .and_then(|s| self.subset(s))
            .and_then(|s| s.policy.as_ref())
        {
            let b = &sub.blocks;
            blocks.load_balancer = b.load_balancer.clone().or(blocks.load_balancer.take());
            blocks.pool = b.pool.or(blocks.pool);
            blocks.outlier = b.outlier.or(blocks.outlier);
            blocks.tls = b.tls.or(blocks.tls);
            proxy = sub.proxy_protocol.or(proxy);
            if let Some(port_blocks) = sub.port(port) {
                blocks = port_blocks.clone();
            }
        }
        let pool = blocks.pool.unwrap_or_default();
        let defaults = ClusterPolicy::default();
        if let Some(mode) = blocks
            .tls
            .filter(|m| *m != manifest::ClientTlsMode::Disable)
        {
            return Err(Unservable::TlsOrigination(mode));
        }
        let (load_balancer, request_hash) = match blocks.load_balancer {
            None => (defaults.load_balancer, None),
            Some(Balance::Use(lb)) => (lb, None),
            Some(Balance::Hash(key)) => (LoadBalancer::RequestHash, Some(key)),
            Some(Balance::Passthrough) => return Err(Unservable::Passthrough),
        };
        Ok(ClusterPolicy {
            load_balancer,
            request_hash,
            http: pool.http.policy(),
            connect_timeout: pool.connect_timeout.unwrap_or(defaults.connect_timeout),
            max_connections: pool.max_connections.unwrap_or(UNLIMITED_CONNECTIONS),
            tcp_keepalive: pool.keepalive,
            outlier_detection: blocks.outlier,
            proxy_protocol: proxy,
        })
    }

    /// Idle timeout and maximum duration of a route whose first destination
    /// uses this rule: from the top-level policy only, as in Istio.
    pub fn route_timeouts(&self) -> (Option<Duration>, Option<Duration>) {
        let pool = self.top.blocks.pool.unwrap_or_default();
        (
            idle_timeout(pool.idle_timeout),
            pool.max_connection_duration,
        )
    }
}

/// Timeouts of a route whose first destination has no DestinationRule.
pub fn default_route_timeouts() -> (Option<Duration>, Option<Duration>) {
    (idle_timeout(None), None)
}

/// Istio's idle timeout: 1h when unset, `0s` turns it off.
fn idle_timeout(configured: Option<Duration>) -> Option<Duration> {
    match configured {
        None => Some(DEFAULT_IDLE_TIMEOUT),
        Some(Duration::ZERO) => None,
        Some(d) => Some(d),
    }
}

/// Validates a DestinationRule's policies; problems go to `diags`.
pub fn compile_rule(dr: &Resource<DestinationRuleSpec>, diags: &mut Diagnostics) -> RulePolicy {
    let mut c = Checker { dr, diags };
    let top = dr
        .spec
        .traffic_policy
        .as_ref()
        .map(|tp| c.level(tp, "spec.trafficPolicy"))
        .unwrap_or_default();
    let mut subsets: Vec<SubsetPolicy> = Vec::new();
    for (i, s) in dr.spec.subsets.iter().enumerate() {
        let path = format!("spec.subsets[{i}]");
        if s.name.is_empty() {
            c.error(&format!("{path}.name"), "a subset needs a name");
            continue;
        }
        if let Some(j) = dr.spec.subsets[..i].iter().position(|o| o.name == s.name) {
            c.error(
                &format!("{path}.name"),
                format!(
                    "duplicate subset name {:?} (also subsets[{j}]); subset names must be unique",
                    s.name
                ),
            );
            continue;
        }
        let policy = s
            .traffic_policy
            .as_ref()
            .map(|tp| c.level(tp, &format!("{path}.trafficPolicy")));
        subsets.push(SubsetPolicy {
            name: s.name.clone(),
            labels: s.labels.clone(),
            policy,
        });
    }
    if dr.spec.export_to.is_some() {
        c.ignored(
            "spec.exportTo",
            "exportTo is accepted but not applied: every resource is visible to ringway",
        );
    }
    if dr.spec.workload_selector.is_some() {
        c.ignored(
            "spec.workloadSelector",
            "workloadSelector is accepted but not applied: the rule applies to ringway",
        );
    }
    RulePolicy {
        id: dr.id(),
        top,
        subsets,
    }
}

struct Checker<'a> {
    dr: &'a Resource<DestinationRuleSpec>,
    diags: &'a mut Diagnostics,
}

impl Checker<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.diags
            .push(self.dr.diag(Severity::Error, path, message));
    }

    fn ignored(&mut self, path: &str, message: impl Into<String>) {
        self.diags
            .push(self.dr.diag(Severity::Warning, path, message));
    }

    fn level(&mut self, tp: &TrafficPolicy, path: &str) -> Level {
        let mut blocks = self.blocks(
            tp.load_balancer.as_ref(),
            tp.connection_pool.as_ref(),
            tp.outlier_detection.as_ref(),
            path,
        );
        blocks.tls = self.tls(tp.tls.as_ref(), path);
        let proxy_protocol = tp.proxy_protocol.map(|p| match p.version {
            None | Some(manifest::ProxyVersion::V1) => ProxyProtocol::V1,
            Some(manifest::ProxyVersion::V2) => ProxyProtocol::V2,
        });
        for (field, present) in [
            ("tunnel", tp.tunnel.is_some()),
            ("retryBudget", tp.retry_budget.is_some()),
        ] {
            if present {
                self.ignored(
                    &format!("{path}.{field}"),
                    format!("{field} is accepted but not implemented by ringway; it has no effect"),
                );
            }
        }
        let mut ports: Vec<(u16, Blocks)> = Vec::new();
        for (i, pl) in tp.port_level_settings.iter().enumerate() {
            let ppath = format!("{path}.portLevelSettings[{i}]");
            let Some(number) = pl.port.and_then(|p| p.number) else {
                self.error(
                    &format!("{ppath}.port.number"),
                    "port.number is required in portLevelSettings",
                );
                continue;
            };
            let Some(port) = port_number(number) else {
                self.error(
                    &format!("{ppath}.port.number"),
                    format!("port {number} is out of range (1-65535)"),
                );
                continue;
            };
            if ports.iter().any(|(p, _)| *p == port) {
                self.error(
                    &format!("{ppath}.port.number"),
                    format!("port {port} appears twice in portLevelSettings"),
                );
                continue;
            }
            let mut blocks = self.blocks(
                pl.load_balancer.as_ref(),
                pl.connection_pool.as_ref(),
                pl.outlier_detection.as_ref(),
                &ppath,
            );
            blocks.tls = self.tls(pl.tls.as_ref(), &ppath);
            ports.push((port, blocks));
        }
        Level {
            blocks,
            proxy_protocol,
            ports,
        }
    }

    /// `tls` of a level: its mode, with a warning when it asks for TLS
    /// origination (refused for the routes it applies to).
    fn tls(
        &mut self,
        tls: Option<&manifest::ClientTls>,
        path: &str,
    ) -> Option<manifest::ClientTlsMode> {
        let mode = tls?.mode.unwrap_or(manifest::ClientTlsMode::Disable);
        if mode != manifest::ClientTlsMode::Disable {
            self.ignored(
                &format!("{path}.tls.mode"),
                format!(
                    "TLS origination ({}) is not implemented yet: a route to a destination this applies to \
                     is refused rather than sent in plaintext",
                    tls_mode_name(mode)
                ),
            );
        }
        Some(mode)
    }

    fn blocks(
        &mut self,
        lb: Option<&manifest::LoadBalancer>,
        pool: Option<&ConnectionPool>,
        outlier: Option<&manifest::OutlierDetection>,
        path: &str,
    ) -> Blocks {
        Blocks {
            load_balancer: lb
                .and_then(|lb| self.load_balancer(lb, &format!("{path}.loadBalancer"))),
            pool: pool.map(|p| self.pool(p, &format!("{path}.connectionPool"))),
            outlier: outlier.and_then(|o| self.outlier(o, &format!("{path}.outlierDetection"))),
            tls: None,
        }
    }

    fn load_balancer(&mut self, lb: &manifest::LoadBalancer, path: &str) -> Option<Balance> {
        for (field, present) in [
            ("localityLbSetting", lb.locality_lb_setting.is_some()),
            ("zoneAwareLbSetting", lb.zone_aware_lb_setting.is_some()),
            ("warmup", lb.warmup.is_some()),
            ("warmupDurationSecs", lb.warmup_duration_secs.is_some()),
        ] {
            if present {
                self.ignored(
                    &format!("{path}.{field}"),
                    format!("{field} is accepted but not implemented by ringway; it has no effect"),
                );
            }
        }
        match (lb.simple, &lb.consistent_hash) {
            (Some(_), Some(_)) => {
                self.error(path, "set either simple or consistentHash, not both");
                None
            }
            (Some(SimpleLb::Passthrough), None) => {
                self.ignored(
                    &format!("{path}.simple"),
                    "PASSTHROUGH forwards to the original destination, which at a gateway is the gateway itself: \
                     a route to a destination it applies to is refused (valid: ROUND_ROBIN, LEAST_REQUEST, RANDOM)",
                );
                Some(Balance::Passthrough)
            }
            (Some(SimpleLb::RoundRobin), None) => Some(Balance::Use(LoadBalancer::RoundRobin)),
            (Some(SimpleLb::Random), None) => Some(Balance::Use(LoadBalancer::Random)),
            (Some(SimpleLb::LeastRequest | SimpleLb::LeastConn | SimpleLb::Unspecified), None) => {
                Some(Balance::Use(LoadBalancer::LeastRequest))
            }
            (None, Some(hash)) => {
                for (field, present) in [
                    ("ringHash", hash.ring_hash.is_some()),
                    ("maglev", hash.maglev.is_some()),
                    ("minimumRingSize", hash.minimum_ring_size.is_some()),
                ] {
                    if present {
                        self.ignored(
                            &format!("{path}.consistentHash.{field}"),
                            format!("{field} is accepted but not applied: ringway always uses its own consistent hash"),
                        );
                    }
                }
                let key = self.request_hash_key(hash, &format!("{path}.consistentHash"))?;
                if let Some(key) = key {
                    Some(Balance::Hash(key))
                } else if hash.use_source_ip == Some(true) {
                    Some(Balance::Use(LoadBalancer::SourceIpHash))
                } else {
                    self.ignored(
                        &format!("{path}.consistentHash"),
                        "consistentHash without a key (useSourceIp, httpHeaderName, httpCookie or \
                         httpQueryParameterName) picks endpoints at random (as Envoy does)",
                    );
                    Some(Balance::Use(LoadBalancer::Random))
                }
            }
            (None, None) => None,
        }
    }

    fn pool(&mut self, pool: &ConnectionPool, path: &str) -> Pool {
        let http = pool
            .http
            .as_ref()
            .map(|h| self.http_pool(h, &format!("{path}.http")))
            .unwrap_or_default();
        let Some(tcp) = &pool.tcp else {
            return Pool {
                http,
                ..Pool::default()
            };
        };
        let path = format!("{path}.tcp");
        let max_connections = tcp.max_connections.and_then(|n| match u32::try_from(n) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                self.error(
                    &format!("{path}.maxConnections"),
                    format!(
                        "maxConnections {n} is out of range: expected 1 to {}",
                        u32::MAX
                    ),
                );
                None
            }
        });
        let connect_timeout = tcp.connect_timeout.map(|d| d.0).filter(|d| {
            let ok = *d >= Duration::from_millis(1);
            if !ok {
                self.error(
                    &format!("{path}.connectTimeout"),
                    "connectTimeout must be at least 1ms",
                );
            }
            ok
        });
        let max_connection_duration = tcp.max_connection_duration.map(|d| d.0).filter(|d| {
            let ok = *d >= Duration::from_millis(1);
            if !ok {
                self.error(
                    &format!("{path}.maxConnectionDuration"),
                    "maxConnectionDuration must be at least 1ms (leave it out for no limit)",
                );
            }
            ok
        });
        let keepalive = tcp.tcp_keepalive.as_ref().map(|k| Keepalive {
            probes: k.probes.filter(|p| *p > 0),
            time_secs: k.time.and_then(|d| whole_seconds(d.0)),
            interval_secs: k.interval.and_then(|d| whole_seconds(d.0)),
        });
        Pool {
            http,
            max_connections,
            connect_timeout,
            keepalive,
            idle_timeout: tcp.idle_timeout.map(|d| d.0),
            max_connection_duration,
        }
    }

    fn outlier(&mut self, o: &manifest::OutlierDetection, path: &str) -> Option<OutlierDetection> {
        for (field, present) in [
            ("consecutiveErrors", o.consecutive_errors.is_some()),
            (
                "splitExternalLocalOriginErrors",
                o.split_external_local_origin_errors.is_some(),
            ),
            (
                "consecutiveLocalOriginFailures",
                o.consecutive_local_origin_failures.is_some(),
            ),
            (
                "outlierDetectionHttpErrorCodes",
                o.outlier_detection_http_error_codes.is_some(),
            ),
        ] {
            if present {
                self.ignored(
                    &format!("{path}.{field}"),
                    format!(
                        "{field} is accepted but not applied; for TCP, consecutive5xxErrors and \
                             consecutiveGatewayErrors count connect failures and timeouts"
                    ),
                );
            }
        }
        let mut percent = |field: &str, value: Option<i64>, default: u32| -> u32 {
            match value {
                None => default,
                Some(v) => u32::try_from(v)
                    .ok()
                    .filter(|v| *v <= 100)
                    .unwrap_or_else(|| {
                        self.error(
                            &format!("{path}.{field}"),
                            format!("{field} {v} is out of range: expected 0 to 100"),
                        );
                        default
                    }),
            }
        };
        let max_ejection_percent = percent("maxEjectionPercent", o.max_ejection_percent, 10);
        let min_health_percent = percent("minHealthPercent", o.min_health_percent, 0);
        let mut at_least_1ms =
            |field: &str, value: Option<manifest::GoDuration>, default: Duration| match value
                .map(|d| d.0)
            {
                None => default,
                Some(d) if d >= Duration::from_millis(1) => d,
                Some(_) => {
                    self.error(
                        &format!("{path}.{field}"),
                        format!("{field} must be at least 1ms"),
                    );
                    default
                }
            };
        let interval = at_least_1ms("interval", o.interval, Duration::from_secs(10));
        let base_ejection_time = at_least_1ms(
            "baseEjectionTime",
            o.base_ejection_time,
            Duration::from_secs(30),
        );
        // Both counters see the same events for TCP (connect failures and
        // timeouts); the lower enabled threshold ejects first.
        let thresholds = [
            o.consecutive_5xx_errors.unwrap_or(5),
            o.consecutive_gateway_errors.unwrap_or(0),
        ];
        let consecutive_errors = thresholds.into_iter().filter(|t| *t > 0).min()?;
        Some(OutlierDetection {
            consecutive_errors,
            consecutive_5xx: Some(thresholds[0]).filter(|t| *t > 0),
            consecutive_gateway_errors: Some(thresholds[1]).filter(|t| *t > 0),
            interval,
            base_ejection_time,
            max_ejection_time: Duration::from_secs(300).max(base_ejection_time),
            max_ejection_percent,
            min_health_percent,
        })
    }
}

fn whole_seconds(d: Duration) -> Option<u32> {
    u32::try_from(d.as_secs()).ok().filter(|s| *s > 0)
}

pub fn port_number(n: u32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p > 0)
}

/// Istio's name of a ClientTLSSettings mode.
pub fn tls_mode_name(mode: manifest::ClientTlsMode) -> &'static str {
    match mode {
        manifest::ClientTlsMode::Disable => "DISABLE",
        manifest::ClientTlsMode::Simple => "SIMPLE",
        manifest::ClientTlsMode::Mutual => "MUTUAL",
        manifest::ClientTlsMode::IstioMutual => "ISTIO_MUTUAL",
    }
}
