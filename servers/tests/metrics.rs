//! `/metrics` over HTTP from a real server: gRPC calls (answered, refused, to unknown paths,
//! streams) show up by method and status code, and the engine's rings by name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use ticker_proto::v1 as pb;
use ticker_proto::v1::market_data_service_client::MarketDataServiceClient;
use ticker_proto::v1::order_service_client::OrderServiceClient;
use ticker_servers::grpc::{AuthConfig, GrpcConfig};
use ticker_servers::market::MarketConfig;
use ticker_servers::ws::{WsConfig, WsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::{Code, Request};

const ALICE: &str = "alice-token";
/// How long a figure may take to show up (a stream's end is seen when the server notices).
const GUARD: Duration = Duration::from_secs(20);

const PLACE: &str = "/ticker.v1.OrderService/PlaceOrder";
const UPDATES: &str = "/ticker.v1.OrderService/SubscribeOrderUpdates";
const INSTRUMENTS: &str = "/ticker.v1.MarketDataService/ListInstruments";

mod grpc_rig;

/// The gRPC rig, plus the HTTP side (`/metrics`) of the WebSocket server on the same market.
struct Rig {
    grpc: grpc_rig::Rig,
    http: WsServer,
}

impl Rig {
    async fn start() -> Rig {
        let market = MarketConfig {
            simulator: None,
            // No heartbeat passes through the rings while the test reads them.
            heartbeat: Duration::from_secs(3600),
            ..MarketConfig::default()
        };
        let config = GrpcConfig {
            auth: AuthConfig::traders([(ALICE, 1)]),
            ..GrpcConfig::default()
        };
        let grpc = grpc_rig::Rig::start_on(market, config).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = WsServer::start_on(
            listener,
            grpc.market.clone(),
            WsConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                ..WsConfig::default()
            },
        )
        .unwrap();
        Rig { grpc, http }
    }

    async fn stop(self) {
        self.http.shutdown(Duration::from_secs(1)).await;
        self.grpc.stop().await;
    }

    async fn scrape(&self) -> Scrape {
        Scrape(get_metrics(self.http.local_addr()).await)
    }

    /// Scrapes until `ready` holds of the exposition.
    async fn scrape_until(&self, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            let s = self.scrape().await;
            if ready(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} never showed up in\n{}",
                s.0
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `GET /metrics` over HTTP/1.1, as a Prometheus server would.
async fn get_metrics(http: SocketAddr) -> String {
    let mut tcp = TcpStream::connect(http).await.unwrap();
    tcp.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    body.to_string()
}

/// An exposition, read by series.
struct Scrape(String);

impl Scrape {
    /// The value of the series `name{labels}` (labels as written, in order), if present.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let series = match labels.is_empty() {
            true => name.to_string(),
            false => format!("{name}{{{}}}", labels.join(",")),
        };
        self.0.lines().find_map(|line| {
            let (s, v) = line.rsplit_once(' ')?;
            (s == series).then(|| v.parse().expect("a number"))
        })
    }

    fn calls(&self, method: &str, code: &str) -> u64 {
        self.value(
            "tickerd_grpc_requests_total",
            &[("method", method), ("code", code)],
        )
        .unwrap_or(0.0) as u64
    }

    fn started(&self, method: &str) -> u64 {
        self.value("tickerd_grpc_requests_started_total", &[("method", method)])
            .unwrap_or_else(|| panic!("no started count for {method}")) as u64
    }

    /// Calls timed (a method never called has no histogram yet).
    fn timed(&self, method: &str) -> u64 {
        self.value(
            "tickerd_grpc_request_duration_seconds_count",
            &[("method", method)],
        )
        .unwrap_or(0.0) as u64
    }

    fn ring(&self, name: &str, ring: &str) -> u64 {
        self.value(name, &[("ring", ring)])
            .unwrap_or_else(|| panic!("no {name} for ring {ring} in\n{}", self.0)) as u64
    }

    /// Every `# TYPE` line: family name to type.
    fn types(&self) -> BTreeMap<&str, &str> {
        self.0
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect()
    }
}

fn authed<T>(message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {ALICE}").parse().unwrap());
    r
}

fn bid(price: &str) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        instrument: "BTC-USD".into(),
        side: pb::Side::Buy as i32,
        order_type: pb::OrderType::Limit as i32,
        price: price.into(),
        size: "0.1".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn rpc_calls_are_counted_by_method_and_code_and_rings_by_name() {
    let rig = Rig::start().await;
    let mut orders = OrderServiceClient::new(rig.grpc.channel.clone());

    // Two orders accepted, one off the tick grid (INVALID_ARGUMENT), one without a token.
    for price in ["65000.00", "64990.00"] {
        let r = orders.place_order(authed(bid(price))).await.unwrap();
        assert!(r.into_inner().result.unwrap().accepted);
    }
    let off_grid = orders
        .place_order(authed(bid("65000.001")))
        .await
        .unwrap_err();
    assert_eq!(off_grid.code(), Code::InvalidArgument, "{off_grid:?}");
    let anonymous = orders
        .place_order(Request::new(bid("65000.00")))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    MarketDataServiceClient::new(rig.grpc.channel.clone())
        .list_instruments(pb::ListInstrumentsRequest {})
        .await
        .unwrap();

    // A path no service serves.
    let mut raw = tonic::client::Grpc::new(rig.grpc.channel.clone());
    raw.ready().await.unwrap();
    let unknown = raw
        .unary::<_, pb::ListInstrumentsResponse, _>(
            Request::new(pb::ListInstrumentsRequest {}),
            http::uri::PathAndQuery::from_static("/ticker.v1.Nowhere/Nothing"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unimplemented, "{unknown:?}");

    // A stream: opened, its first message (the snapshot) read, then dropped by the client.
    let mut updates = orders
        .subscribe_order_updates(authed(pb::SubscribeOrderUpdatesRequest { from_seq: None }))
        .await
        .unwrap()
        .into_inner();
    updates.message().await.unwrap().expect("a snapshot first");
    let open = rig.scrape().await;
    assert_eq!(open.started(UPDATES), 1);
    assert_eq!(open.timed(UPDATES), 1, "timed to its first message");
    assert_eq!(open.calls(UPDATES, "OK"), 0, "not ended yet");
    drop(updates);

    let s = rig
        .scrape_until("the stream's end", |s| s.calls(UPDATES, "CANCELLED") == 1)
        .await;
    assert_eq!(s.started(PLACE), 4);
    assert_eq!(s.calls(PLACE, "OK"), 2);
    assert_eq!(s.calls(PLACE, "INVALID_ARGUMENT"), 1);
    assert_eq!(s.calls(PLACE, "UNAUTHENTICATED"), 1);
    assert_eq!(s.timed(PLACE), 4);
    assert_eq!((s.started(INSTRUMENTS), s.calls(INSTRUMENTS, "OK")), (1, 1));
    assert_eq!(s.started("unknown"), 1);
    assert_eq!(s.calls("unknown", "UNIMPLEMENTED"), 1);
    // Methods never called have their counts from the start, at zero, and no histogram yet.
    let cancel = "/ticker.v1.OrderService/CancelOrder";
    let ok = [("method", cancel), ("code", "OK")];
    assert_eq!(s.started(cancel), 0);
    assert_eq!(s.value("tickerd_grpc_requests_total", &ok), Some(0.0));
    assert!(!s.0.contains(&format!("_count{{method=\"{cancel}\"}}")));
    assert!(s.0.contains(&format!(
        "tickerd_grpc_request_duration_seconds_bucket{{method=\"{PLACE}\",le=\"+Inf\"}} 4\n"
    )));

    // The rings, by name, with their capacities.
    assert_eq!(s.ring("tickerd_ring_capacity", "ingress"), 65_536);
    assert_eq!(s.ring("tickerd_ring_capacity", "egress"), 256);
    assert!(s.ring("tickerd_ring_capacity", "batch_return") >= 258);
    // Nothing waits in an idle market; the engine holds its spare buffers.
    assert_eq!(s.ring("tickerd_ring_depth", "ingress"), 0);
    assert_eq!(s.ring("tickerd_ring_depth", "egress"), 0);
    assert!(s.ring("tickerd_ring_depth", "batch_return") > 0);
    // The single figure from before stays.
    assert_eq!(s.value("tickerd_commands_in_flight", &[]), Some(0.0));

    let types = s.types();
    for (family, kind) in [
        ("tickerd_grpc_requests_started_total", "counter"),
        ("tickerd_grpc_requests_total", "counter"),
        ("tickerd_grpc_request_duration_seconds", "histogram"),
        ("tickerd_ring_depth", "gauge"),
        ("tickerd_ring_capacity", "gauge"),
        ("tickerd_commands_total", "counter"),
        ("tickerd_engine_to_feeds_seconds", "histogram"),
        ("tickerd_ws_connections", "gauge"),
        ("tickerd_runtime_alive_tasks", "gauge"),
    ] {
        assert_eq!(types.get(family), Some(&kind), "{family}");
    }
    rig.stop().await;
}
