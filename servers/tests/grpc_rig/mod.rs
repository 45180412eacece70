//! The rig of the gRPC integration tests (grpc.rs, risk.rs): a market without its simulator and
//! its gRPC front on a free loopback port, a tonic channel to it, and the request helpers both
//! files use. Each test binary uses part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;
use ticker_proto::v1 as pb;
use ticker_proto::v1::admin_service_client::AdminServiceClient;
use ticker_proto::v1::market_data_service_client::MarketDataServiceClient;
use ticker_proto::v1::order_service_client::OrderServiceClient;
use ticker_proto::v1::risk_service_client::RiskServiceClient;
use ticker_servers::grpc::{AuthConfig, GrpcConfig, GrpcServer};
use ticker_servers::market::{Market, MarketConfig};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Request, Status};
use tonic_types::StatusExt;

pub struct Rig {
    pub market: Arc<Market>,
    pub server: GrpcServer,
    pub channel: Channel,
}

/// A market of `shards` engine threads without the simulator.
fn quiet_market(shards: usize) -> MarketConfig {
    MarketConfig {
        simulator: None,
        shards,
        ..MarketConfig::default()
    }
}

impl Rig {
    /// A market without simulator served on `config` (its `listen` aside: the rig binds a free
    /// loopback port), and a channel connected to it.
    pub async fn start_with(config: GrpcConfig) -> Rig {
        Rig::start_on(quiet_market(1), config).await
    }

    /// A server with `auth` and otherwise default settings, on a market of `shards` engine
    /// threads.
    pub async fn start_sharded(auth: AuthConfig, shards: usize) -> Rig {
        let config = GrpcConfig {
            auth,
            ..GrpcConfig::default()
        };
        Rig::start_on(quiet_market(shards), config).await
    }

    /// As [`Rig::start_with`], on a market of `market`.
    pub async fn start_on(market: MarketConfig, config: GrpcConfig) -> Rig {
        let market = Market::start(market).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = GrpcServer::start_on(listener, market.clone(), config)
            .await
            .unwrap();
        let channel = Channel::from_shared(format!("http://{}", server.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Rig {
            market,
            server,
            channel,
        }
    }

    pub fn orders(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.channel.clone())
    }

    pub fn market_data(&self) -> MarketDataServiceClient<Channel> {
        MarketDataServiceClient::new(self.channel.clone())
    }

    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
    }

    pub fn risk(&self) -> RiskServiceClient<Channel> {
        RiskServiceClient::new(self.channel.clone())
    }

    pub async fn stop(self) {
        self.server.shutdown(Duration::from_secs(1)).await;
        let market = self.market;
        tokio::task::spawn_blocking(move || market.shutdown())
            .await
            .unwrap();
    }
}

/// `message` with `token` as its bearer token.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// A limit order, good till cancelled.
pub fn limit(instrument: &str, side: pb::Side, price: &str, size: &str) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        instrument: instrument.into(),
        side: side as i32,
        order_type: pb::OrderType::Limit as i32,
        price: price.into(),
        size: size.into(),
        ..Default::default()
    }
}

/// Places `req` with `token`; the call must succeed (the answer may still be a reject).
pub async fn place(rig: &Rig, token: &str, req: pb::PlaceOrderRequest) -> pb::PlaceOrderResponse {
    rig.orders()
        .place_order(authed(req, token))
        .await
        .unwrap()
        .into_inner()
}

/// The fields a refusal's `BadRequest` detail names, in order; the detail must be there.
pub fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}
