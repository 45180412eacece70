//! Roles and run-time operations over gRPC against a real market (no simulator): every RPC
//! checked against every role, and `AdminService` adding an instrument that order entry,
//! `ListInstruments` and market-data subscriptions know at once, halting and resuming one.

use std::sync::Arc;
use std::time::Duration;
use ticker_proto::v1 as pb;
use ticker_proto::v1::admin_service_client::AdminServiceClient;
use ticker_proto::v1::market_data_service_client::MarketDataServiceClient;
use ticker_proto::v1::order_service_client::OrderServiceClient;
use ticker_servers::auth::{Principal, Role};
use ticker_servers::grpc::{AuthConfig, GrpcConfig, GrpcServer};
use ticker_servers::market::{Market, MarketConfig};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;

const TRADER: &str = "trader-token";
const RISK: &str = "risk-token";
const ADMIN: &str = "admin-token";
const ADMIN_TRADING: &str = "admin-trading-token";

struct Rig {
    market: Arc<Market>,
    server: GrpcServer,
    channel: Channel,
}

impl Rig {
    async fn start() -> Rig {
        let market = Market::start(MarketConfig {
            simulator: None,
            ..MarketConfig::default()
        })
        .unwrap();
        let mut auth = AuthConfig::traders([(TRADER, 1)]);
        let role = |role, account| Principal { role, account };
        auth.tokens.insert(RISK.into(), role(Role::Risk, None));
        auth.tokens.insert(ADMIN.into(), role(Role::Admin, None));
        auth.tokens
            .insert(ADMIN_TRADING.into(), role(Role::Admin, Some(2)));
        let config = GrpcConfig {
            auth,
            ..GrpcConfig::default()
        };
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

    fn orders(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.channel.clone())
    }

    fn market_data(&self) -> MarketDataServiceClient<Channel> {
        MarketDataServiceClient::new(self.channel.clone())
    }

    fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
    }

    async fn stop(self) {
        self.server.shutdown(Duration::from_secs(1)).await;
        let market = self.market;
        tokio::task::spawn_blocking(move || market.shutdown())
            .await
            .unwrap();
    }
}

fn authed<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(message);
    if let Some(token) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    r
}

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.map_or_else(|s| s.code(), |_| Code::Ok)
}

fn limit(instrument: &str, side: pb::Side, price: &str, size: &str) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        instrument: instrument.into(),
        side: side as i32,
        order_type: pb::OrderType::Limit as i32,
        price: price.into(),
        size: size.into(),
        ..Default::default()
    }
}

/// The status code of every RPC called with `token` (a well-formed request each).
async fn codes(rig: &Rig, token: Option<&str>) -> Vec<(&'static str, Code)> {
    let btc = || limit("BTC-USD", pb::Side::Buy, "64000.00", "0.001");
    let resting = pb::PlaceOrderRequest {
        client_order_id: 77,
        ..btc()
    };
    // Placed, amended and cancelled in that order, so each finds the order.
    let mut out = vec![
        (
            "OrderService/PlaceOrder",
            code(rig.orders().place_order(authed(resting, token)).await),
        ),
        (
            "OrderService/AmendOrder",
            code(
                rig.orders()
                    .amend_order(authed(
                        pb::AmendOrderRequest {
                            order: Some(pb::amend_order_request::Order::ClientOrderId(77)),
                            instrument: "BTC-USD".into(),
                            size: Some("0.002".into()),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "OrderService/CancelOrder",
            code(
                rig.orders()
                    .cancel_order(authed(
                        pb::CancelOrderRequest {
                            order: Some(pb::cancel_order_request::Order::ClientOrderId(77)),
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "OrderService/MassCancel",
            code(
                rig.orders()
                    .mass_cancel(authed(pb::MassCancelRequest::default(), token))
                    .await,
            ),
        ),
        (
            "OrderService/BulkPlaceOrders",
            code(
                rig.orders()
                    .bulk_place_orders(authed(tokio_stream::iter(vec![btc()]), token))
                    .await,
            ),
        ),
        (
            "OrderService/OrderSession",
            code(
                rig.orders()
                    .order_session(authed(tokio_stream::iter(Vec::new()), token))
                    .await,
            ),
        ),
        (
            "OrderService/SubscribeOrderUpdates",
            code(
                rig.orders()
                    .subscribe_order_updates(authed(
                        pb::SubscribeOrderUpdatesRequest::default(),
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "MarketDataService/Subscribe",
            code(
                rig.market_data()
                    .subscribe(authed(
                        pb::SubscribeRequest {
                            instruments: vec!["BTC-USD".into()],
                            channels: vec![pb::Channel::Ticker as i32],
                            ..Default::default()
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "MarketDataService/GetDepthSnapshot",
            code(
                rig.market_data()
                    .get_depth_snapshot(authed(
                        pb::GetDepthSnapshotRequest {
                            instrument: "BTC-USD".into(),
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "MarketDataService/ListInstruments",
            code(
                rig.market_data()
                    .list_instruments(authed(pb::ListInstrumentsRequest {}, token))
                    .await,
            ),
        ),
    ];
    // Halting and resuming an unknown symbol reaches the check of the symbol only once the
    // role is granted: INVALID_ARGUMENT then, never a change to the market.
    out.push((
        "AdminService/AddInstrument",
        code(
            rig.admin()
                .add_instrument(authed(pb::AddInstrumentRequest::default(), token))
                .await,
        ),
    ));
    out.push((
        "AdminService/HaltInstrument",
        code(
            rig.admin()
                .halt_instrument(authed(
                    pb::HaltInstrumentRequest {
                        symbol: "NOPE-USD".into(),
                    },
                    token,
                ))
                .await,
        ),
    ));
    out.push((
        "AdminService/ResumeInstrument",
        code(
            rig.admin()
                .resume_instrument(authed(
                    pb::ResumeInstrumentRequest {
                        symbol: "NOPE-USD".into(),
                    },
                    token,
                ))
                .await,
        ),
    ));
    out
}

#[tokio::test]
async fn every_rpc_checks_the_callers_role() {
    let rig = Rig::start().await;
    let trading = |name: &str| name.starts_with("OrderService/");
    let admin = |name: &str| name.starts_with("AdminService/");
    // No token: order entry and admin are UNAUTHENTICATED, market data is public.
    for (name, c) in codes(&rig, None).await {
        let expected = if trading(name) || admin(name) {
            Code::Unauthenticated
        } else {
            Code::Ok
        };
        assert_eq!(c, expected, "{name} without a token");
    }
    // A trader trades and reads market data; admin RPCs are refused.
    for (name, c) in codes(&rig, Some(TRADER)).await {
        let expected = if admin(name) {
            Code::PermissionDenied
        } else {
            Code::Ok
        };
        assert_eq!(c, expected, "{name} as a trader");
    }
    // Risk without an account: no order entry, no admin.
    for (name, c) in codes(&rig, Some(RISK)).await {
        let expected = if trading(name) || admin(name) {
            Code::PermissionDenied
        } else {
            Code::Ok
        };
        assert_eq!(c, expected, "{name} as risk");
    }
    // Admin without an account: admin RPCs reach their argument checks; no order entry.
    for (name, c) in codes(&rig, Some(ADMIN)).await {
        let expected = if trading(name) {
            Code::PermissionDenied
        } else if admin(name) {
            Code::InvalidArgument
        } else {
            Code::Ok
        };
        assert_eq!(c, expected, "{name} as admin");
    }
    // Admin with an account trades too.
    for (name, c) in codes(&rig, Some(ADMIN_TRADING)).await {
        let expected = if admin(name) {
            Code::InvalidArgument
        } else {
            Code::Ok
        };
        assert_eq!(c, expected, "{name} as a trading admin");
    }
    let denied = rig
        .admin()
        .halt_instrument(authed(
            pb::HaltInstrumentRequest {
                symbol: "BTC-USD".into(),
            },
            Some(TRADER),
        ))
        .await
        .unwrap_err();
    assert!(
        denied.message().contains("needs the admin role"),
        "{}",
        denied.message()
    );
    rig.stop().await;
}

fn doge() -> pb::AddInstrumentRequest {
    pb::AddInstrumentRequest {
        symbol: "DOGE-USD".into(),
        tick_size: "0.0001".into(),
        lot_size: "1".into(),
        min_size: "1".into(),
        max_size: "1000000".into(),
        reference_price: "0.1500".into(),
        band: "0.5".into(),
    }
}

#[tokio::test]
async fn an_added_instrument_trades_and_streams_at_once() {
    let rig = Rig::start().await;
    let added = rig
        .admin()
        .add_instrument(authed(doge(), Some(ADMIN)))
        .await
        .unwrap()
        .into_inner();
    let result = added.result.unwrap();
    assert!(result.accepted, "{result:?}");
    assert!(result.engine_seq > 0);
    let info = added.instrument.unwrap();
    assert_eq!(info.symbol, "DOGE-USD");
    assert_eq!(info.band_low, "0.0750");
    assert_eq!(info.band_high, "0.2250");

    let listed = rig
        .market_data()
        .list_instruments(pb::ListInstrumentsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.instruments.iter().any(|i| i.symbol == "DOGE-USD"));

    // A subscriber of the new instrument sees a trade made on it.
    let mut trades = rig
        .market_data()
        .subscribe(pb::SubscribeRequest {
            instruments: vec!["DOGE-USD".into()],
            channels: vec![pb::Channel::Trades as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let sell = limit("DOGE-USD", pb::Side::Sell, "0.1501", "100");
    let sold = rig
        .orders()
        .place_order(authed(sell, Some(TRADER)))
        .await
        .unwrap()
        .into_inner();
    assert!(sold.result.unwrap().accepted);
    let buy = limit("DOGE-USD", pb::Side::Buy, "0.1501", "40");
    let bought = rig
        .orders()
        .place_order(authed(buy, Some(ADMIN_TRADING)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bought.order.unwrap().filled_size, "40");
    loop {
        let m = trades.message().await.unwrap().expect("stream open");
        if let Some(pb::market_data_message::Payload::Trade(t)) = m.payload {
            assert_eq!((t.price.as_str(), t.size.as_str()), ("0.1501", "40"));
            break;
        }
    }

    // The same symbol again is a typed reject; a bad spec names its field.
    let again = rig
        .admin()
        .add_instrument(authed(doge(), Some(ADMIN)))
        .await
        .unwrap()
        .into_inner();
    let result = again.result.unwrap();
    assert!(!result.accepted);
    assert_eq!(result.reject_reason(), pb::RejectReason::InstrumentExists);
    assert!(again.instrument.is_none());
    let bad = pb::AddInstrumentRequest {
        symbol: "XRP-USD".into(),
        reference_price: "0.50005".into(),
        ..doge()
    };
    let status = rig
        .admin()
        .add_instrument(authed(bad, Some(ADMIN)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|f| f.field)
        .collect();
    assert_eq!(fields, ["reference_price"]);
    rig.stop().await;
}

#[tokio::test]
async fn a_halted_instrument_rejects_orders_until_resumed() {
    let rig = Rig::start().await;
    let halt = rig
        .admin()
        .halt_instrument(authed(
            pb::HaltInstrumentRequest {
                symbol: "ETH-USD".into(),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(halt.result.unwrap().accepted);
    let order = || limit("ETH-USD", pb::Side::Buy, "3000.00", "0.01");
    let refused = rig
        .orders()
        .place_order(authed(order(), Some(TRADER)))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert!(!refused.accepted);
    assert_eq!(refused.reject_reason(), pb::RejectReason::Halted);
    // Other instruments trade on.
    let btc = limit("BTC-USD", pb::Side::Buy, "64000.00", "0.001");
    let other = rig
        .orders()
        .place_order(authed(btc, Some(TRADER)))
        .await
        .unwrap()
        .into_inner();
    assert!(other.result.unwrap().accepted);
    let resume = rig
        .admin()
        .resume_instrument(authed(
            pb::ResumeInstrumentRequest {
                symbol: "ETH-USD".into(),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(resume.result.unwrap().accepted);
    let accepted = rig
        .orders()
        .place_order(authed(order(), Some(TRADER)))
        .await
        .unwrap()
        .into_inner();
    assert!(accepted.result.unwrap().accepted);
    rig.stop().await;
}
