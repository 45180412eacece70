//! The gRPC server: `OrderService`, `MarketDataService`, `RiskService`, `AdminService`,
//! `grpc.health.v1` health and server
//! reflection (`grpc.reflection.v1` and `v1alpha`) on one port, over HTTP/2 for gRPC and
//! HTTP/1.1 for gRPC-Web, in clear text or TLS.
//!
//! The services are tonic's; the connections are served by hyper directly rather than by
//! tonic's `Server`, which answers an expired `grpc-timeout` with CANCELLED before the
//! service can say DEADLINE_EXCEEDED. Here the deadline is the services' business: a request
//! that reaches the engine too late is not executed and the caller gets DEADLINE_EXCEEDED.

use super::admin::AdminRpc;
use super::auth::{Auth, AuthConfig, AuthConfigError};
use super::frames::{CodecSettings, Handler, Streams};
use super::market_data::{MarketDataApi, MarketDataConfig, MarketDataRpc};
use super::metadata_limit::{transport_ceiling, MetadataLimitLayer};
use super::metering::MeteringLayer;
use super::orders::{OrderApi, OrderConfig, OrderRpc};
use super::risk::{RiskApi, RiskRpc};
use crate::market::Market;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use ticker_proto::v1::admin_service_server::AdminServiceServer;
use ticker_proto::v1::market_data_service_server::MarketDataServiceServer;
use ticker_proto::v1::order_service_server::OrderServiceServer;
use ticker_proto::v1::risk_service_server::RiskServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::rustls;
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

/// Everything the gRPC front runs with; defaults in brackets.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// Where to listen [127.0.0.1:50051].
    pub listen: SocketAddr,
    pub auth: AuthConfig,
    pub orders: OrderConfig,
    pub market_data: MarketDataConfig,
    /// Largest message accepted or sent, in bytes [4 MiB].
    pub max_message_size: usize,
    /// HTTP/2 flow-control window of each stream [1 MiB]: large, so a stream of small market
    /// data messages is not throttled by window updates.
    pub stream_window: u32,
    /// HTTP/2 flow-control window of each connection [16 MiB].
    pub connection_window: u32,
    /// HTTP/2 BDP-based window sizing, overriding the two windows above [false].
    pub adaptive_window: bool,
    /// Largest HTTP/2 frame the server accepts [64 KiB].
    pub max_frame_size: u32,
    /// Largest request metadata (the header block, counted as HTTP/2 does) [16 KiB]; larger:
    /// RESOURCE_EXHAUSTED naming both sizes (see `metadata_limit`).
    pub max_header_bytes: usize,
    /// Concurrent calls per connection [1,024].
    pub max_concurrent_streams: u32,
    /// HTTP/2 PING interval to detect dead peers; `None` disables [20 s].
    pub keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is closed [10 s].
    pub keepalive_timeout: Duration,
    /// Accept gzip-compressed requests and compress responses for clients that accept gzip
    /// [true]. Compression is negotiated per call: a client that does not ask gets none.
    pub gzip: bool,
    /// Serve gRPC-Web (HTTP/1.1 and HTTP/2, `application/grpc-web+proto`), so browsers need no
    /// proxy [true].
    pub grpc_web: bool,
    /// Origins whose pages may call gRPC-Web across origins (CORS), like
    /// `https://desk.example.com`; `*` allows any [none: only same-origin pages].
    pub cors_origins: Vec<String>,
    /// Serve TLS with this certificate chain and key (PEM) [none: clear text].
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            auth: AuthConfig::default(),
            orders: OrderConfig::default(),
            market_data: MarketDataConfig::default(),
            max_message_size: 4 << 20,
            stream_window: 1 << 20,
            connection_window: 16 << 20,
            adaptive_window: false,
            max_frame_size: 64 << 10,
            max_header_bytes: 16 << 10,
            max_concurrent_streams: 1024,
            keepalive_interval: Some(Duration::from_secs(20)),
            keepalive_timeout: Duration::from_secs(10),
            gzip: true,
            grpc_web: true,
            cors_origins: Vec::new(),
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("grpc.cors_origins: {0}")]
    Cors(String),
    #[error("reflection descriptors: {0}")]
    Reflection(String),
}

type HttpService = BoxCloneSyncService<
    http::Request<hyper::body::Incoming>,
    http::Response<tonic::body::Body>,
    std::convert::Infallible,
>;

/// The routes of every service, ready to serve.
pub async fn routes(market: Arc<Market>, config: &GrpcConfig) -> Result<Routes, GrpcError> {
    let auth = Auth::new(&config.auth)?;
    let settings = CodecSettings::new(config.gzip, config.max_message_size);
    let orders = Arc::new(OrderApi::new(
        market.clone(),
        auth.clone(),
        config.orders.clone(),
    ));
    let mut admin_server = AdminServiceServer::new(AdminRpc::new(market.clone(), auth.clone()))
        .max_decoding_message_size(config.max_message_size)
        .max_encoding_message_size(config.max_message_size);
    let risk = Arc::new(RiskApi::new(market.clone(), auth.clone()));
    let mut risk_server = RiskServiceServer::new(RiskRpc(risk.clone()))
        .max_decoding_message_size(config.max_message_size)
        .max_encoding_message_size(config.max_message_size);
    let market_data = Arc::new(MarketDataApi::new(
        market.clone(),
        auth,
        config.market_data.clone(),
    ));

    let mut order_server = OrderServiceServer::new(OrderRpc(orders.clone()))
        .max_decoding_message_size(config.max_message_size)
        .max_encoding_message_size(config.max_message_size);
    let mut md_server = MarketDataServiceServer::new(MarketDataRpc(market_data.clone()))
        .max_decoding_message_size(config.max_message_size)
        .max_encoding_message_size(config.max_message_size);
    if config.gzip {
        order_server = order_server
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
        md_server = md_server
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
        admin_server = admin_server
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
        risk_server = risk_server
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
    }
    let (o1, o2) = (orders.clone(), orders);
    let order_service = Streams::new(
        order_server,
        vec![
            (
                "/ticker.v1.OrderService/SubscribeOrderUpdates",
                Handler::OrderUpdates(Arc::new(move |r| Box::pin(o1.clone().order_updates(r)))),
            ),
            (
                "/ticker.v1.OrderService/OrderSession",
                Handler::OrderSession(Arc::new(move |r| Box::pin(o2.clone().session(r)))),
            ),
        ],
        settings,
    );
    let md_service = Streams::new(
        md_server,
        vec![(
            "/ticker.v1.MarketDataService/Subscribe",
            Handler::Subscribe(Arc::new(move |r| {
                Box::pin(market_data.clone().subscribe(r))
            })),
        )],
        settings,
    );
    let (r1, r2) = (risk.clone(), risk);
    let risk_service = Streams::new(
        risk_server,
        vec![
            (
                "/ticker.v1.RiskService/StreamDropCopy",
                Handler::DropCopy(Arc::new(move |r| Box::pin(r1.clone().drop_copy(r)))),
            ),
            (
                "/ticker.v1.RiskService/StreamPositions",
                Handler::Positions(Arc::new(move |r| Box::pin(r2.clone().positions(r)))),
            ),
        ],
        settings,
    );

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<OrderServiceServer<OrderRpc>>()
        .await;
    health_reporter
        .set_serving::<MarketDataServiceServer<MarketDataRpc>>()
        .await;
    health_reporter
        .set_serving::<AdminServiceServer<AdminRpc>>()
        .await;
    health_reporter
        .set_serving::<RiskServiceServer<RiskRpc>>()
        .await;
    watch_health(Arc::downgrade(&market), health_reporter);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ticker_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| GrpcError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| GrpcError::Reflection(e.to_string()))?;

    Ok(Routes::new(order_service)
        .add_service(md_service)
        .add_service(risk_service)
        .add_service(admin_server)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare())
}

/// Keeps gRPC health in step with [`Market::health`]: every service (and the server as a
/// whole, "") NOT_SERVING while the market is unhealthy — a gateway behind the stream or cut
/// off from NATS, a failed journal.
fn watch_health(market: std::sync::Weak<Market>, reporter: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    tokio::spawn(async move {
        let mut serving = true;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            tick.tick().await;
            let Some(market) = market.upgrade() else {
                return;
            };
            let healthy = market.health().is_ok();
            drop(market);
            if healthy == serving {
                continue;
            }
            serving = healthy;
            let status = if healthy {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in [
                "",
                "ticker.v1.OrderService",
                "ticker.v1.MarketDataService",
                "ticker.v1.RiskService",
                "ticker.v1.AdminService",
            ] {
                reporter.set_service_status(service, status).await;
            }
        }
    });
}

/// CORS for gRPC-Web calls from pages on `origins` (none: no layer, so browsers allow only
/// same-origin pages): preflights answered, the gRPC headers a call sends allowed and the
/// status trailers (which gRPC-Web carries as headers) exposed to the page.
fn cors_layer(origins: &[String]) -> Result<Option<tower_http::cors::CorsLayer>, GrpcError> {
    use http::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| {
                http::HeaderValue::from_str(o)
                    .map_err(|_| GrpcError::Cors(format!("{o:?} is not a header value")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    let name = HeaderName::from_static;
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([http::Method::POST])
            .allow_headers([
                CONTENT_TYPE,
                AUTHORIZATION,
                name("x-grpc-web"),
                name("x-user-agent"),
                name("grpc-timeout"),
            ])
            .expose_headers([
                name("grpc-status"),
                name("grpc-message"),
                name("grpc-status-details-bin"),
            ])
            .max_age(Duration::from_secs(24 * 60 * 60)),
    ))
}

fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, GrpcError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |what: &str, path: &PathBuf, e: &dyn std::fmt::Display| {
        GrpcError::Tls(format!("{what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(&files.cert_chain)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err("certificate chain", &files.cert_chain, &e))?;
    let key = PrivateKeyDer::from_pem_file(&files.private_key)
        .map_err(|e| err("private key", &files.private_key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| GrpcError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| GrpcError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
}

/// A running gRPC front.
pub struct GrpcServer {
    local_addr: SocketAddr,
    /// The grace period, once shutdown begins.
    stop: watch::Sender<Option<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcServer {
    /// Binds `config.listen` and serves until [`shutdown`](Self::shutdown).
    pub async fn start(market: Arc<Market>, config: GrpcConfig) -> Result<GrpcServer, GrpcError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| GrpcError::Listen {
                    addr: config.listen,
                    source,
                })?;
        GrpcServer::start_on(listener, market, config).await
    }

    /// Serves on a listener the caller bound (tests bind `127.0.0.1:0`).
    pub async fn start_on(
        listener: TcpListener,
        market: Arc<Market>,
        config: GrpcConfig,
    ) -> Result<GrpcServer, GrpcError> {
        let local_addr = listener.local_addr().map_err(|source| GrpcError::Listen {
            addr: config.listen,
            source,
        })?;
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let limit = MetadataLimitLayer {
            limit: config.max_header_bytes,
        };
        // Metering sees every call as plain gRPC (inside gRPC-Web), the ones the metadata
        // limit refuses included.
        let metering = MeteringLayer::new(market.stats().clone());
        let routes = tower::Layer::layer(
            &metering,
            tower::Layer::layer(&limit, routes(market, &config).await?),
        );
        let service: HttpService = if config.grpc_web {
            let web = tower::Layer::layer(&tonic_web::GrpcWebLayer::new(), routes);
            match cors_layer(&config.cors_origins)? {
                Some(cors) => BoxCloneSyncService::new(tower::Layer::layer(&cors, web)),
                None => BoxCloneSyncService::new(web),
            }
        } else {
            BoxCloneSyncService::new(
                routes
                    .map_request(|r: http::Request<hyper::body::Incoming>| {
                        r.map(tonic::body::Body::new)
                    })
                    .map_response(|r| r.map(tonic::body::Body::new)),
            )
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http2()
            .timer(TokioTimer::new())
            .initial_stream_window_size(config.stream_window)
            .initial_connection_window_size(config.connection_window)
            .adaptive_window(config.adaptive_window)
            .max_frame_size(config.max_frame_size)
            .max_header_list_size(transport_ceiling(config.max_header_bytes))
            .max_concurrent_streams(config.max_concurrent_streams)
            .keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_timeout);
        if !config.grpc_web {
            builder = builder.http2_only();
        }
        let (stop, stopped) = watch::channel(None);
        let task = tokio::spawn(accept_loop(listener, builder, service, tls, stopped));
        Ok(GrpcServer {
            local_addr,
            stop,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, asks every connection to finish its calls in progress (HTTP/2
    /// GOAWAY), and after `grace` closes those still open: streams end then, and order
    /// sessions cancel on disconnect as they would for a client that vanished.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    service: HttpService,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stopped: watch::Receiver<Option<Duration>>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = Arc::new(builder);
    // Dropping the set aborts the connections still open.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        // Reap finished connections so the set does not grow with every client ever seen.
        while connections.try_join_next().is_some() {}
        // Stream messages are small; waiting to fill packets only adds latency.
        let _ = tcp.set_nodelay(true);
        let hyper_service = hyper_util::service::TowerToHyperService::new(service.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        match &tls {
            None => {
                let conn = builder
                    .serve_connection(TokioIo::new(tcp), hyper_service)
                    .into_owned();
                connections.spawn(async move {
                    let _ = watcher.watch(conn).await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    // A failed handshake concerns that client only.
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), hyper_service)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                });
            }
        }
    }
    let grace = stopped.borrow().unwrap_or_default();
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}
