//! What one HTTP request adds to a worker's counters: Istio's request
//! counter and its three histograms (Envoy's default buckets, one writer
//! per block), and why ringway refused a request before routing it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::worker::add;

/// Envoy's default histogram buckets (`HistogramSettingsImpl::defaultBuckets`
/// in `source/common/stats/histogram_impl.cc`), which Istio's request
/// histograms use unless a `sidecar.istio.io/statsHistogramBuckets`
/// annotation says otherwise. Milliseconds for durations, bytes for sizes.
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Slots of a histogram: one per bound, and one past the last (`+Inf` only).
const SLOTS: usize = BUCKETS.len() + 1;

/// The slot a value falls in: the first bound it does not exceed
/// (Prometheus' `le`), else the one past the last bound.
fn slot(value: u64) -> usize {
    BUCKETS.partition_point(|bound| *bound < value as f64)
}

/// One histogram, written by one worker. Each slot counts the values that
/// fell in it (not cumulative), so the count is their sum and always equals
/// the `+Inf` bucket, even when a scrape reads it mid-update.
#[derive(Debug, Default)]
pub struct Histogram {
    slots: [AtomicU64; SLOTS],
    sum: AtomicU64,
}

impl Histogram {
    pub fn record(&self, value: u64) {
        add(&self.slots[slot(value)], 1);
        add(&self.sum, value);
    }

    pub fn totals(&self) -> HistogramTotals {
        HistogramTotals {
            slots: std::array::from_fn(|i| self.slots[i].load(Ordering::Relaxed)),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A histogram as a scrape reads it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HistogramTotals {
    /// Values per slot, not cumulative; the last is above every bound.
    pub slots: [u64; SLOTS],
    pub sum: u64,
}

impl HistogramTotals {
    pub fn count(&self) -> u64 {
        self.slots.iter().sum()
    }

    /// `(le, cumulative count)` per bound, as Prometheus' `_bucket` lines
    /// write them (`+Inf` is [`HistogramTotals::count`]).
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        BUCKETS
            .iter()
            .zip(self.slots.iter())
            .scan(0, |seen, (le, n)| {
                *seen += n;
                Some((*le, *seen))
            })
    }
}

impl std::ops::AddAssign for HistogramTotals {
    fn add_assign(&mut self, o: HistogramTotals) {
        for (mine, theirs) in self.slots.iter_mut().zip(o.slots) {
            *mine += theirs;
        }
        self.sum += o.sum;
    }
}

/// What the data plane measured of one finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSample {
    /// From the first byte of the request head to the last byte of the
    /// response (Envoy's `requestComplete()`).
    pub duration: Duration,
    /// Request head and body as received (Istio's downstream wire meter).
    pub request_bytes: u64,
    /// Response head and body as sent downstream.
    pub response_bytes: u64,
}

/// Istio's HTTP series of one label set: `istio_requests_total` and the
/// three histograms.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct HttpCounters {
    pub requests: AtomicU64,
    /// Milliseconds, truncated as Istio records them.
    pub duration: Histogram,
    pub request_bytes: Histogram,
    pub response_bytes: Histogram,
}

impl HttpCounters {
    pub fn record(&self, sample: &HttpSample) {
        add(&self.requests, 1);
        let millis = u64::try_from(sample.duration.as_millis()).unwrap_or(u64::MAX);
        self.duration.record(millis);
        self.request_bytes.record(sample.request_bytes);
        self.response_bytes.record(sample.response_bytes);
    }

    pub fn totals(&self) -> HttpTotals {
        HttpTotals {
            requests: self.requests.load(Ordering::Relaxed),
            duration: self.duration.totals(),
            request_bytes: self.request_bytes.totals(),
            response_bytes: self.response_bytes.totals(),
        }
    }
}

/// Istio's HTTP series of one label set, as a scrape reads them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HttpTotals {
    pub requests: u64,
    pub duration: HistogramTotals,
    pub request_bytes: HistogramTotals,
    pub response_bytes: HistogramTotals,
}

impl std::ops::AddAssign for HttpTotals {
    fn add_assign(&mut self, o: HttpTotals) {
        self.requests += o.requests;
        self.duration += o.duration;
        self.request_bytes += o.request_bytes;
        self.response_bytes += o.response_bytes;
    }
}

/// Why a request was refused before it was routed
/// (`ringway_http_downstream_rejects_total{reason}`). The status named is
/// the local reply ringway sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// 400: not HTTP/1.1 syntax (bad request line, invalid characters in a
    /// name or value, obs-fold, bare LF).
    Malformed,
    /// 400: ambiguous or invalid message framing: Content-Length with
    /// Transfer-Encoding, duplicate or malformed Content-Length, a bad chunk
    /// line, Transfer-Encoding on HTTP/1.0.
    BadFraming,
    /// 400: an HTTP/1.1 request without Host.
    MissingHost,
    /// 431: a head over 60 KiB or over 100 header fields.
    HeadTooLarge,
    /// 408: the head did not arrive in time.
    HeaderTimeout,
    /// 501: a transfer coding other than a final `chunked`.
    NotImplemented,
    /// A version other than HTTP/1.0 and HTTP/1.1 in the request line.
    BadVersion,
    /// The HTTP/2 connection preface (`PRI * HTTP/2.0`): closed.
    H2Preface,
    /// 403: an upgrade other than `websocket`.
    UpgradeRefused,
    /// 405: CONNECT.
    Connect,
}

impl Reject {
    pub const ALL: [Reject; 10] = [
        Reject::Malformed,
        Reject::BadFraming,
        Reject::MissingHost,
        Reject::HeadTooLarge,
        Reject::HeaderTimeout,
        Reject::NotImplemented,
        Reject::BadVersion,
        Reject::H2Preface,
        Reject::UpgradeRefused,
        Reject::Connect,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::BadFraming => "bad_framing",
            Reject::MissingHost => "missing_host",
            Reject::HeadTooLarge => "head_too_large",
            Reject::HeaderTimeout => "header_timeout",
            Reject::NotImplemented => "not_implemented",
            Reject::BadVersion => "bad_version",
            Reject::H2Preface => "h2_preface",
            Reject::UpgradeRefused => "upgrade_refused",
            Reject::Connect => "connect",
        }
    }

    /// Its index in [`Reject::ALL`].
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_the_first_bucket_they_do_not_exceed() {
        struct Case {
            value: u64,
            slot: usize,
        }
        let cases = [
            Case { value: 0, slot: 0 },
            Case { value: 1, slot: 1 },
            Case { value: 2, slot: 2 },
            Case { value: 5, slot: 2 },
            Case { value: 6, slot: 3 },
            Case {
                value: 3_600_000,
                slot: 18,
            },
            Case {
                value: 3_600_001,
                slot: 19,
            },
            Case {
                value: u64::MAX,
                slot: 19,
            },
        ];
        for c in cases {
            assert_eq!(slot(c.value), c.slot, "value {}", c.value);
        }
    }

    #[test]
    fn a_histogram_counts_every_value_once_and_sums_them() {
        let h = Histogram::default();
        for v in [0, 3, 7, 7, 4_000_000] {
            h.record(v);
        }
        let t = h.totals();
        assert_eq!(t.count(), 5);
        assert_eq!(t.sum, 4_000_017);
        let cumulative: Vec<(f64, u64)> = t.cumulative().take(4).collect();
        assert_eq!(cumulative, [(0.5, 1), (1.0, 1), (5.0, 2), (10.0, 4)]);
        assert_eq!(t.cumulative().last(), Some((3_600_000.0, 4)));
    }

    #[test]
    fn reject_indices_follow_all() {
        for (i, r) in Reject::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }
}
