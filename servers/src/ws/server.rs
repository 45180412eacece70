//! The WebSocket front's server: [`WsConfig`], the listener, and the count of open connections
//! that `max_connections` is checked against.

use super::deflate::{DeflateConfig, DeflateConfigError};
use super::http;
use super::limits::WsLimits;
use super::session::Front;
use super::writer::Writers;
use crate::auth::{AuthConfig, AuthConfigError, Tokens};
use crate::market::Market;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Everything the WebSocket front runs with; defaults in brackets.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Where to listen [127.0.0.1:8080].
    pub listen: SocketAddr,
    /// Tokens for `auth` [none: no order entry], shared with the gRPC front's table format.
    pub auth: AuthConfig,
    pub limits: WsLimits,
    /// permessage-deflate (RFC 7692): on, shared compressor, 15-bit window, inflate cap = the
    /// message-size limit [`DeflateConfig::default`].
    pub deflate: DeflateConfig,
    /// How long a client may take to send its request headers [10 s].
    pub header_read_timeout: Duration,
    /// Tasks that write to the connections, each owning a share of them [one per worker
    /// thread of the runtime the server starts on].
    pub writers: Option<usize>,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth: AuthConfig::default(),
            limits: WsLimits::default(),
            deflate: DeflateConfig::default(),
            header_read_timeout: Duration::from_secs(10),
            writers: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error("deflate: {0}")]
    Deflate(#[from] DeflateConfigError),
}

/// Open WebSocket connections against `max_connections`.
#[derive(Debug)]
pub struct Connections {
    open: AtomicUsize,
    max: usize,
    closed: Notify,
}

/// One reserved connection; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot(Arc<Connections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.closed.notify_waiters();
    }
}

impl Connections {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Connections {
            open: AtomicUsize::new(0),
            max,
            closed: Notify::new(),
        })
    }

    /// A slot, or `None` when `max` connections are open.
    pub fn reserve(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            if self.open() == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// A running WebSocket front.
pub struct WsServer {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    connections: Arc<Connections>,
    accept: JoinHandle<()>,
}

/// Pause after a failed `accept` (out of file descriptors, say) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

impl WsServer {
    /// Binds `config.listen` and serves until [`shutdown`](Self::shutdown).
    pub async fn start(market: Arc<Market>, config: WsConfig) -> Result<WsServer, WsError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| WsError::Listen {
                    addr: config.listen,
                    source,
                })?;
        WsServer::start_on(listener, market, config)
    }

    /// Serves on a listener the caller bound (`config.listen` only names it in errors): one
    /// with socket options of its own, say, which the accepted connections inherit — a small
    /// send buffer makes a client that stops reading meet the slow-subscriber policies sooner.
    pub fn start_on(
        listener: TcpListener,
        market: Arc<Market>,
        config: WsConfig,
    ) -> Result<WsServer, WsError> {
        let tokens = Tokens::new(&config.auth)?;
        let local_addr = listener.local_addr().map_err(|source| WsError::Listen {
            addr: config.listen,
            source,
        })?;
        let (shutdown, stop) = watch::channel(false);
        let connections = Connections::new(config.limits.max_connections);
        config.deflate.validate()?;
        let front = Arc::new(Front {
            market,
            deflate: DeflateConfig {
                // An incoming compressed message may inflate up to the message-size limit.
                max_inflated_message: config.limits.max_message_size,
                ..config.deflate.clone()
            },
            writers: Writers::start(
                config
                    .writers
                    .unwrap_or_else(|| tokio::runtime::Handle::current().metrics().num_workers()),
                &config.limits,
            ),
            tokens,
            limits: config.limits.clone(),
            shutdown: stop.clone(),
        });
        let accept = tokio::spawn(accept_loop(
            listener,
            front,
            connections.clone(),
            stop,
            config.header_read_timeout,
        ));
        Ok(WsServer {
            local_addr,
            shutdown,
            connections,
            accept,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// WebSocket connections open now.
    pub fn connections(&self) -> usize {
        self.connections.open()
    }

    /// Stops accepting, closes every WebSocket connection with 1001 and waits up to `grace`
    /// for them to finish.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        self.accept.abort();
        let _ = tokio::time::timeout(grace, self.connections.all_closed()).await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    front: Arc<super::session::Front>,
    connections: Arc<Connections>,
    mut stop: watch::Receiver<bool>,
    header_read_timeout: Duration,
) {
    loop {
        let tcp = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Market data is many small messages: send each at once.
        let _ = tcp.set_nodelay(true);
        let front = front.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            let service =
                service_fn(move |req| http::route(req, front.clone(), connections.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
    }
}
