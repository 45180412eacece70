//! `ticker.v1.MarketDataService`: the feeds' topics over gRPC.
//!
//! `Subscribe` opens one hub subscription per instrument × channel and merges them; each
//! message is the feeds' protobuf encoding of the update, shared by every subscriber, plus this
//! subscriber's delivery tail ([`super::frames`]). The hub's slow-consumer policies apply as
//! they are: ticker and candles conflate, depth and L3 resync from a snapshot, and a trades
//! subscriber that falls too far behind gets RESOURCE_EXHAUSTED rather than a silent hole.

use super::auth::Auth;
use super::convert::{self, Refusal, Violations};
use super::frames::{self, Out, OutStream};
use crate::market::Market;
use futures_util::StreamExt;
use prost::Message as _;
use std::collections::HashMap;
use std::sync::Arc;
use ticker_engine::InstrumentId;
use ticker_feeds::{proto, Channel, Delivery, Interval, Topic};
use ticker_proto::v1 as pb;
use ticker_proto::v1::market_data_service_server::MarketDataService;
use tonic::{Code, Request, Response, Status};

/// Limits of market-data subscriptions; defaults in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketDataConfig {
    /// Topics (instrument × channel) one `Subscribe` call may follow [1,000].
    pub max_topics: usize,
}

impl Default for MarketDataConfig {
    fn default() -> Self {
        MarketDataConfig { max_topics: 1000 }
    }
}

pub struct MarketDataApi {
    market: Arc<Market>,
    auth: Auth,
    config: MarketDataConfig,
}

fn channel(c: pb::Channel, interval: pb::CandleInterval) -> Option<Channel> {
    Some(match c {
        pb::Channel::Ticker => Channel::Ticker,
        pb::Channel::Depth => Channel::Depth,
        pb::Channel::Trades => Channel::Trades,
        pb::Channel::L3 => Channel::L3,
        pb::Channel::Candles => Channel::Candles(match interval {
            pb::CandleInterval::CandleInterval1s => Interval::S1,
            pb::CandleInterval::Unspecified | pb::CandleInterval::CandleInterval1m => Interval::M1,
            pb::CandleInterval::CandleInterval1h => Interval::H1,
        }),
        pb::Channel::Unspecified => return None,
    })
}

impl MarketDataApi {
    pub fn new(market: Arc<Market>, auth: Auth, config: MarketDataConfig) -> Self {
        MarketDataApi {
            market,
            auth,
            config,
        }
    }

    /// The topics a request names, each with its resume point.
    fn topics(
        &self,
        req: &pb::SubscribeRequest,
    ) -> Result<Vec<(Channel, InstrumentId, Option<u64>)>, Refusal> {
        let instruments = self.market.instruments();
        let mut v = Violations::default();
        let interval = pb::CandleInterval::try_from(req.candle_interval).unwrap_or_else(|_| {
            v.add(
                "candle_interval",
                format!("unknown interval {}", req.candle_interval),
            );
            pb::CandleInterval::Unspecified
        });
        let channel_of = |field: String, c: i32, v: &mut Violations| {
            let found = pb::Channel::try_from(c)
                .ok()
                .and_then(|c| channel(c, interval));
            if found.is_none() {
                v.add(
                    field,
                    format!("{c} is not a channel (CHANNEL_TICKER, CHANNEL_DEPTH, ...)"),
                );
            }
            found
        };
        if req.instruments.is_empty() {
            v.add("instruments", "required: at least one instrument symbol");
        }
        if req.channels.is_empty() {
            v.add("channels", "required: at least one channel");
        }
        let ids: Vec<_> = req
            .instruments
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                convert::instrument(instruments, &format!("instruments[{i}]"), s, &mut v)
            })
            .map(|w| w.id())
            .collect();
        let channels: Vec<_> = req
            .channels
            .iter()
            .enumerate()
            .filter_map(|(i, c)| channel_of(format!("channels[{i}]"), *c, &mut v))
            .collect();
        let mut resume = HashMap::new();
        for (i, r) in req.resume.iter().enumerate() {
            let wire = convert::instrument(
                instruments,
                &format!("resume[{i}].instrument"),
                &r.instrument,
                &mut v,
            );
            let c = channel_of(format!("resume[{i}].channel"), r.channel, &mut v);
            if let (Some(w), Some(channel)) = (wire, c) {
                resume.insert(
                    Topic::Market {
                        channel,
                        instrument: w.id(),
                    },
                    r.from_seq,
                );
            }
        }
        let count = ids.len() * channels.len();
        if count > self.config.max_topics {
            v.add(
                "instruments",
                format!(
                    "{count} topics; at most {} per subscription",
                    self.config.max_topics
                ),
            );
        }
        v.finish(|| {
            let mut topics = Vec::with_capacity(count);
            for &instrument in &ids {
                for &channel in &channels {
                    let topic = Topic::Market {
                        channel,
                        instrument,
                    };
                    if !topics
                        .iter()
                        .any(|&(c, i, _)| (c, i) == (channel, instrument))
                    {
                        topics.push((channel, instrument, resume.get(&topic).copied()));
                    }
                }
            }
            topics
        })
        .map_err(Refusal::from)
    }

    /// `Subscribe`, as pre-encoded frames.
    pub async fn subscribe(
        self: Arc<Self>,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<OutStream>, Status> {
        self.auth.market_data(req.metadata())?;
        let topics = self.topics(req.get_ref())?;
        let hub = self.market.hub();
        let streams = topics.into_iter().map(|(channel, instrument, from_seq)| {
            let topic = Topic::Market {
                channel,
                instrument,
            };
            let wire = self.market.instruments().get(instrument);
            let symbol = wire.as_ref().map_or("", |w| w.symbol()).to_string();
            let what = format!("{} of {symbol}", channel.name());
            // The stream is read only when HTTP/2 flow control lets it send: a lag is the
            // server's, and the subscriber catches up on what the topic's ring holds.
            let sub = hub.subscribe(topic, from_seq).catch_up();
            frames::subscription_stream(sub, what, move |from_seq, resumed_after| {
                let (channel, candle_interval) = proto::channel(channel);
                Out::encoded(&pb::MarketDataMessage {
                    instrument: symbol.clone(),
                    channel: channel as i32,
                    candle_interval: candle_interval as i32,
                    seq: resumed_after,
                    prev_seq: from_seq,
                    payload: Some(pb::market_data_message::Payload::Gap(pb::Gap {
                        from_seq,
                        resumed_after,
                    })),
                    delivery: pb::Delivery::Gap as i32,
                    ..Default::default()
                })
            })
            .boxed()
        });
        Ok(Response::new(Box::pin(futures_util::stream::select_all(
            streams,
        ))))
    }
}

/// The generated server's view of [`MarketDataApi`].
#[derive(Clone)]
pub struct MarketDataRpc(pub Arc<MarketDataApi>);

#[tonic::async_trait]
impl MarketDataService for MarketDataRpc {
    type SubscribeStream = frames::TypedStream<pb::MarketDataMessage>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let stream = self.0.clone().subscribe(req).await?.into_inner();
        Ok(Response::new(frames::typed(stream)))
    }

    async fn get_depth_snapshot(
        &self,
        req: Request<pb::GetDepthSnapshotRequest>,
    ) -> Result<Response<pb::MarketDataMessage>, Status> {
        self.0.auth.market_data(req.metadata())?;
        let mut v = Violations::default();
        let wire = convert::instrument(
            self.0.market.instruments(),
            "instrument",
            &req.get_ref().instrument,
            &mut v,
        );
        v.finish(|| ()).map_err(Refusal::from)?;
        let Some(wire) = wire else {
            return Err(Status::invalid_argument("unknown instrument"));
        };
        let topic = Topic::Market {
            channel: Channel::Depth,
            instrument: wire.id(),
        };
        // A new subscription starts with the topic's snapshot, taken under the depth lock.
        let mut sub = self.0.market.hub().subscribe(topic, None);
        match sub.try_recv() {
            Ok(Some(Delivery::Snapshot { message, .. })) => {
                let mut m = pb::MarketDataMessage::decode(message.proto().clone())
                    .map_err(|e| Status::internal(format!("depth snapshot: {e}")))?;
                m.set_delivery(pb::Delivery::Snapshot);
                Ok(Response::new(m))
            }
            _ => Err(Status::new(
                Code::Unavailable,
                format!("no depth snapshot of {} yet", wire.symbol()),
            )),
        }
    }

    async fn list_instruments(
        &self,
        req: Request<pb::ListInstrumentsRequest>,
    ) -> Result<Response<pb::ListInstrumentsResponse>, Status> {
        self.0.auth.market_data(req.metadata())?;
        let instruments = self
            .0
            .market
            .instruments()
            .all()
            .iter()
            .map(|w| convert::instrument_info(w))
            .collect();
        Ok(Response::new(pb::ListInstrumentsResponse { instruments }))
    }
}
