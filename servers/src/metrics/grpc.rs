//! Per-RPC figures of the gRPC front: calls started, calls ended by status code, and the time
//! to each call's first response, per method (`docs/metrics.md`).
//!
//! The methods are known before any call: every method of the descriptor sets the server
//! registers for reflection (`ticker.v1`, health, reflection). Each has its atomics made at
//! start, so recording a call looks its path up in a sorted table (no allocation, no lock) and
//! adds to its atomics. A path that is not one of them (a typo, a scanner) counts under
//! `method="unknown"`, so no client can grow the number of series.

use super::{counter_base, Families, Histogram};
use prometheus_client::encoding::{EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;
use tonic::Code;

/// The `method` label of calls to paths no service serves.
pub const UNKNOWN_METHOD: &str = "unknown";

/// gRPC status codes as they are named in the `code` label, indexed by their number.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The descriptor sets of every service on the gRPC port (see `grpc::server::routes`).
fn descriptor_sets() -> [&'static [u8]; 4] {
    [
        ticker_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
}

/// Every method served, as in request paths (`/ticker.v1.OrderService/PlaceOrder`), sorted.
pub fn methods() -> &'static [String] {
    static METHODS: LazyLock<Vec<String>> = LazyLock::new(|| {
        use prost::Message;
        let mut methods: Vec<String> = descriptor_sets()
            .iter()
            .map(|set| {
                prost_types::FileDescriptorSet::decode(*set)
                    .expect("the descriptor sets compiled into tickerd decode")
            })
            .flat_map(|set| set.file)
            .flat_map(|file| {
                let package = file.package().to_string();
                file.service.into_iter().flat_map(move |service| {
                    let prefix = match package.as_str() {
                        "" => format!("/{}/", service.name()),
                        p => format!("/{p}.{}/", service.name()),
                    };
                    service
                        .method
                        .into_iter()
                        .map(move |m| format!("{prefix}{}", m.name()))
                })
            })
            .collect();
        methods.sort();
        methods.dedup();
        methods
    });
    &METHODS
}

/// One method's figures.
#[derive(Debug, Default)]
struct MethodStats {
    started: AtomicU64,
    /// Calls ended, by status code.
    handled: [AtomicU64; CODES.len()],
    /// Time to the first response message, or to the status when it comes first.
    first_response: Histogram,
}

/// A method's place in [`GrpcStats`]: one of [`methods`], or the unknown bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodId(usize);

/// The gRPC front's per-RPC figures (recorded by `grpc::metering`).
#[derive(Debug)]
pub struct GrpcStats {
    /// One per [`methods`], in its order, then the unknown bucket.
    methods: Box<[MethodStats]>,
}

impl Default for GrpcStats {
    fn default() -> Self {
        GrpcStats {
            methods: (0..=methods().len())
                .map(|_| MethodStats::default())
                .collect(),
        }
    }
}

impl GrpcStats {
    /// The method a request path names (unknown paths share one bucket).
    pub fn method(&self, path: &str) -> MethodId {
        let known = methods();
        MethodId(
            known
                .binary_search_by(|m| m.as_str().cmp(path))
                .unwrap_or(known.len()),
        )
    }

    /// A call of `method` arrived.
    pub fn started(&self, method: MethodId) {
        self.methods[method.0]
            .started
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A call's first response message (or its status, when that comes first) after `took`.
    pub fn first_response(&self, method: MethodId, took: Duration) {
        self.methods[method.0]
            .first_response
            .record_ns(took.as_nanos().min(u64::MAX as u128) as u64);
    }

    /// A call ended with `code`.
    pub fn handled(&self, method: MethodId, code: Code) {
        let code = (code as usize).min(CODES.len() - 1);
        self.methods[method.0].handled[code].fetch_add(1, Ordering::Relaxed);
    }

    /// The label of each entry: the known methods' paths, then `unknown`.
    fn labelled(&self) -> impl Iterator<Item = (&str, &MethodStats)> {
        methods()
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(UNKNOWN_METHOD))
            .zip(self.methods.iter())
    }

    /// The three families. Every method has its `started` and `code="OK"` samples from the
    /// start (so rates begin at zero); other codes, and a method's duration histogram, appear
    /// once they have something to count.
    pub fn write(&self, f: &mut Families) -> fmt::Result {
        f.counters(
            "tickerd_grpc_requests_started_total",
            "gRPC calls received (streams: opened), by method; unknown paths are method=\"unknown\".",
            "method",
            self.labelled().map(|(m, s)| (m, s.started.load(Ordering::Relaxed))),
        )?;
        let name = "tickerd_grpc_requests_total";
        let mut calls = f.encoder().encode_descriptor(
            counter_base(name),
            "gRPC calls ended (streams: closed), by method and status code.",
            None,
            MetricType::Counter,
        )?;
        for (method, s) in self.labelled() {
            for (code, count) in CODES.iter().zip(&s.handled) {
                let count = count.load(Ordering::Relaxed);
                if count == 0 && *code != "OK" {
                    continue;
                }
                let labels = [("method", method), ("code", *code)];
                calls
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        let mut durations = f.encoder().encode_descriptor(
            "tickerd_grpc_request_duration_seconds",
            "From a gRPC call's arrival to its first response message, or to its status when \
             that comes first: a unary call's handling time, a stream's time to its first \
             message.",
            None,
            MetricType::Histogram,
        )?;
        // A histogram is 24 series: only methods called so far have one.
        for (method, s) in self.labelled() {
            if s.first_response.count() > 0 {
                s.first_response
                    .encode(durations.encode_family(&[("method", method)])?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::DescriptorEncoder;
    use prometheus_client::registry::Registry;
    use std::sync::Arc;

    #[test]
    fn every_method_of_every_service_on_the_port_is_known() {
        for path in [
            "/ticker.v1.OrderService/PlaceOrder",
            "/ticker.v1.OrderService/OrderSession",
            "/ticker.v1.MarketDataService/Subscribe",
            "/ticker.v1.RiskService/StreamPositions",
            "/ticker.v1.AdminService/AddInstrument",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(methods().iter().any(|m| m == path), "{path}");
        }
        // Sorted and unique, as the lookup's binary search needs.
        assert!(methods().windows(2).all(|w| w[0] < w[1]), "{:?}", methods());
    }

    #[test]
    fn unknown_paths_share_one_bucket() {
        let stats = GrpcStats::default();
        let unknown = stats.method("/nope.Service/Nothing");
        assert_eq!(stats.method("/"), unknown);
        assert_eq!(stats.method("/ticker.v1.OrderService/placeorder"), unknown);
        assert_ne!(stats.method("/ticker.v1.OrderService/PlaceOrder"), unknown);
        assert_eq!(unknown.0, methods().len());
    }

    #[derive(Debug, Clone)]
    struct Exposed(Arc<GrpcStats>);

    impl Collector for Exposed {
        fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
            self.0.write(&mut Families::new(encoder))
        }
    }

    fn exposition(stats: &Arc<GrpcStats>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposed(stats.clone())));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn calls_are_exposed_by_method_and_code_with_their_durations() {
        let stats = Arc::new(GrpcStats::default());
        let place = stats.method("/ticker.v1.OrderService/PlaceOrder");
        let unknown = stats.method("/x.Y/Z");
        for _ in 0..3 {
            stats.started(place);
        }
        stats.first_response(place, Duration::from_micros(150));
        stats.handled(place, Code::Ok);
        stats.first_response(place, Duration::from_millis(3));
        stats.handled(place, Code::InvalidArgument);
        stats.started(unknown);
        stats.first_response(unknown, Duration::from_micros(10));
        stats.handled(unknown, Code::Unimplemented);
        let out = exposition(&stats);
        for line in [
            "# TYPE tickerd_grpc_requests_started_total counter\n",
            "tickerd_grpc_requests_started_total{method=\"/ticker.v1.OrderService/PlaceOrder\"} 3\n",
            "tickerd_grpc_requests_started_total{method=\"unknown\"} 1\n",
            "tickerd_grpc_requests_started_total{method=\"/grpc.health.v1.Health/Check\"} 0\n",
            "# TYPE tickerd_grpc_requests_total counter\n",
            "tickerd_grpc_requests_total{method=\"/ticker.v1.OrderService/PlaceOrder\",code=\"OK\"} 1\n",
            "tickerd_grpc_requests_total{method=\"/ticker.v1.OrderService/PlaceOrder\",code=\"INVALID_ARGUMENT\"} 1\n",
            "tickerd_grpc_requests_total{method=\"unknown\",code=\"UNIMPLEMENTED\"} 1\n",
            "tickerd_grpc_requests_total{method=\"/ticker.v1.OrderService/CancelOrder\",code=\"OK\"} 0\n",
            "# TYPE tickerd_grpc_request_duration_seconds histogram\n",
            "tickerd_grpc_request_duration_seconds_bucket{method=\"/ticker.v1.OrderService/PlaceOrder\",le=\"0.0002\"} 1\n",
            "tickerd_grpc_request_duration_seconds_bucket{method=\"/ticker.v1.OrderService/PlaceOrder\",le=\"0.005\"} 2\n",
            "tickerd_grpc_request_duration_seconds_count{method=\"/ticker.v1.OrderService/PlaceOrder\"} 2\n",
            "tickerd_grpc_request_duration_seconds_count{method=\"unknown\"} 1\n",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
        // Codes that never happened have no sample but OK's; methods never called, no
        // histogram.
        assert!(!out.contains("code=\"CANCELLED\""), "{out}");
        let histograms = out
            .lines()
            .filter(|l| l.starts_with("tickerd_grpc_request_duration_seconds_count{"))
            .count();
        assert_eq!(histograms, 2, "{out}");
        let families = out.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(families, 3, "{out}");
        // Bounded: a sample per method (and unknown) for the started counter.
        let started = out
            .lines()
            .filter(|l| l.starts_with("tickerd_grpc_requests_started_total{"))
            .count();
        assert_eq!(started, methods().len() + 1);
    }

    #[test]
    fn code_labels_follow_the_grpc_spec() {
        assert_eq!(CODES[Code::Ok as usize], "OK");
        assert_eq!(CODES[Code::DeadlineExceeded as usize], "DEADLINE_EXCEEDED");
        assert_eq!(CODES[Code::Unauthenticated as usize], "UNAUTHENTICATED");
        assert_eq!(CODES.len(), Code::Unauthenticated as usize + 1);
    }
}
