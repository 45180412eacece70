//! Streams of pre-encoded messages: the feeds encode each update once as protobuf, and the
//! stream RPCs write those shared `Bytes` to every subscriber as they are, adding only the
//! per-subscriber tail ([`ticker_proto::frame`]).
//!
//! tonic's generated servers encode typed messages, so the streaming methods whose items are
//! pre-encoded (`MarketDataService/Subscribe`, `OrderService/SubscribeOrderUpdates`,
//! `OrderService/OrderSession`, `RiskService/StreamDropCopy` and `RiskService/StreamPositions`)
//! are routed by [`Streams`] to handlers that use [`OutCodec`], whose encoder copies bytes.
//! Every other method goes to the generated server.

use bytes::{BufMut, Bytes};
use futures_util::Stream;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use ticker_feeds::{Delivery, Ended, SnapshotReason, Subscription};
use ticker_proto::frame::{Frame, Tail};
use ticker_proto::v1 as pb;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, EnabledCompressionEncodings, StdError};
use tonic::server::{Grpc, NamedService};
use tonic::{Request, Response, Status, Streaming};

/// One stream message, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// A shared encoding and this subscriber's tail.
    Frame(Frame),
    /// A message encoded for this subscriber alone.
    Encoded(Bytes),
}

impl Out {
    pub fn encoded(message: &impl prost::Message) -> Out {
        Out::Encoded(Bytes::from(message.encode_to_vec()))
    }

    fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Out::Frame(f) => f.encode(buf),
            Out::Encoded(b) => buf.put_slice(b),
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        match self {
            Out::Frame(f) => Bytes::from(f.to_vec()),
            Out::Encoded(b) => b.clone(),
        }
    }

    /// The typed message (for callers of the generated service traits).
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, Status> {
        M::decode(self.to_bytes()).map_err(|e| Status::internal(format!("stream frame: {e}")))
    }
}

pub type OutStream = Pin<Box<dyn Stream<Item = Result<Out, Status>> + Send>>;

/// The typed stream a generated service trait returns.
pub type TypedStream<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>;

/// An [`OutStream`] as the typed stream the generated trait returns: the frames decoded. Only
/// used when the generated server is mounted without [`Streams`] in front of it.
pub fn typed<M: prost::Message + Default + 'static>(stream: OutStream) -> TypedStream<M> {
    use futures_util::StreamExt;
    Box::pin(stream.map(|r| r.and_then(|o| o.decode::<M>())))
}

/// A codec that writes [`Out`]s as they are and decodes requests `D` with prost.
pub struct OutCodec<D>(PhantomData<fn() -> D>);

impl<D> Default for OutCodec<D> {
    fn default() -> Self {
        OutCodec(PhantomData)
    }
}

pub struct OutEncoder;

impl Encoder for OutEncoder {
    type Item = Out;
    type Error = Status;

    fn encode(&mut self, item: Out, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst);
        Ok(())
    }
}

pub struct ProstDecoder<D>(PhantomData<fn() -> D>);

impl<D: prost::Message + Default> Decoder for ProstDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed request message: {e}")))
    }
}

impl<D: prost::Message + Default + Send + 'static> Codec for OutCodec<D> {
    type Encode = Out;
    type Decode = D;
    type Encoder = OutEncoder;
    type Decoder = ProstDecoder<D>;

    fn encoder(&mut self) -> OutEncoder {
        OutEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<D> {
        ProstDecoder(PhantomData)
    }
}

/// A market-data or order-update delivery as a frame. `gap` builds the rare per-subscriber
/// message for [`Delivery::Gap`].
pub fn frame(delivery: Delivery, gap: impl FnOnce(u64, u64) -> Out) -> Out {
    let (message, tail) = match delivery {
        Delivery::Message(m) => (m, Tail::default()),
        Delivery::Snapshot { message, reason } => {
            let delivery = match reason {
                SnapshotReason::Initial => pb::Delivery::Snapshot,
                SnapshotReason::Resync => pb::Delivery::Resync,
                SnapshotReason::ResumeTooOld => pb::Delivery::ResumeTooOld,
            };
            (
                message,
                Tail {
                    delivery,
                    skipped: 0,
                },
            )
        }
        Delivery::Conflated { message, skipped } => (
            message,
            Tail {
                delivery: pb::Delivery::Conflated,
                skipped,
            },
        ),
        Delivery::Gap {
            from_seq,
            resumed_after,
        } => return gap(from_seq, resumed_after),
    };
    Out::Frame(Frame {
        shared: message.proto().clone(),
        tail,
    })
}

/// A hub subscription as a stream of frames. A subscriber the hub disconnects for being too
/// slow gets RESOURCE_EXHAUSTED with the reason and the stream ends: nothing is skipped
/// silently. `what` names the stream in that message.
pub fn subscription_stream(
    sub: Subscription,
    what: String,
    gap: impl Fn(u64, u64) -> Out + Send + Sync + 'static,
) -> impl Stream<Item = Result<Out, Status>> + Send {
    futures_util::stream::unfold(Some((sub, what, gap)), |state| async move {
        let (mut sub, what, gap) = state?;
        match sub.recv().await {
            Ok(d) => {
                let out = frame(d, &gap);
                Some((Ok(out), Some((sub, what, gap))))
            }
            Err(Ended::TooSlow { skipped, limit }) => {
                let last = sub.last_seq();
                Some((
                    Err(Status::resource_exhausted(format!(
                        "subscriber too slow: {what} fell {skipped} messages behind its queue \
                         limit of {limit}; resume with from_seq = {last}"
                    ))),
                    None,
                ))
            }
            Err(Ended::Closed) => Some((Err(Status::unavailable(format!("{what} closed"))), None)),
        }
    })
}

/// [`subscription_stream`] of the messages `keep` keeps, each decoded as `M` (tail included),
/// given to `keep` to trim (a snapshot to the accounts asked for) and encoded again for this
/// subscriber alone. For filtered streams; an unfiltered one passes the shared bytes on.
pub fn filtered_stream<M>(
    sub: Subscription,
    what: String,
    gap: impl Fn(u64, u64) -> Out + Send + Sync + 'static,
    keep: impl Fn(&mut M) -> bool + Send + Sync + 'static,
) -> impl Stream<Item = Result<Out, Status>> + Send
where
    M: prost::Message + Default + 'static,
{
    use futures_util::StreamExt;
    let keep = Arc::new(keep);
    subscription_stream(sub, what, gap).filter_map(move |item| {
        let keep = keep.clone();
        async move {
            match item.and_then(|out| out.decode::<M>()) {
                Ok(mut message) => keep(&mut message).then(|| Ok(Out::encoded(&message))),
                Err(e) => Some(Err(e)),
            }
        }
    })
}

/// Transport settings the hand-routed methods share with the generated servers.
#[derive(Debug, Clone, Copy, Default)]
pub struct CodecSettings {
    pub accept: EnabledCompressionEncodings,
    pub send: EnabledCompressionEncodings,
    pub max_decoding: Option<usize>,
    pub max_encoding: Option<usize>,
}

impl CodecSettings {
    pub fn new(gzip: bool, max_message_size: usize) -> Self {
        let mut s = CodecSettings {
            max_decoding: Some(max_message_size),
            max_encoding: Some(max_message_size),
            ..CodecSettings::default()
        };
        if gzip {
            s.accept.enable(CompressionEncoding::Gzip);
            s.send.enable(CompressionEncoding::Gzip);
        }
        s
    }

    fn grpc<D: prost::Message + Default + Send + 'static>(&self) -> Grpc<OutCodec<D>> {
        Grpc::new(OutCodec::<D>::default())
            .apply_compression_config(self.accept, self.send)
            .apply_max_message_size_config(self.max_decoding, self.max_encoding)
    }
}

type ServerStreamFn<D> =
    Arc<dyn Fn(Request<D>) -> BoxFuture<Response<OutStream>, Status> + Send + Sync>;
type BidiStreamFn<D> =
    Arc<dyn Fn(Request<Streaming<D>>) -> BoxFuture<Response<OutStream>, Status> + Send + Sync>;

/// A hand-routed streaming method.
#[derive(Clone)]
pub enum Handler {
    Subscribe(ServerStreamFn<pb::SubscribeRequest>),
    OrderUpdates(ServerStreamFn<pb::SubscribeOrderUpdatesRequest>),
    OrderSession(BidiStreamFn<pb::SessionRequest>),
    DropCopy(ServerStreamFn<pb::StreamDropCopyRequest>),
    Positions(ServerStreamFn<pb::StreamPositionsRequest>),
}

/// A generated server with some of its streaming methods routed to [`Handler`]s.
#[derive(Clone)]
pub struct Streams<S> {
    inner: S,
    handlers: Arc<Vec<(&'static str, Handler)>>,
    settings: CodecSettings,
}

impl<S> Streams<S> {
    pub fn new(inner: S, handlers: Vec<(&'static str, Handler)>, settings: CodecSettings) -> Self {
        Streams {
            inner,
            handlers: Arc::new(handlers),
            settings,
        }
    }
}

impl<S: NamedService> NamedService for Streams<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Streams<S>
where
    S: tower::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Send,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let Some(handler) = self
            .handlers
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, h)| h.clone())
        else {
            return Box::pin(self.inner.call(req));
        };
        let settings = self.settings;
        Box::pin(async move {
            Ok(match handler {
                Handler::Subscribe(f) => {
                    let svc = tower::service_fn(move |r| f(r));
                    settings.grpc().server_streaming(svc, req).await
                }
                Handler::OrderUpdates(f) => {
                    let svc = tower::service_fn(move |r| f(r));
                    settings.grpc().server_streaming(svc, req).await
                }
                Handler::OrderSession(f) => {
                    let svc = tower::service_fn(move |r| f(r));
                    settings.grpc().streaming(svc, req).await
                }
                Handler::DropCopy(f) => {
                    let svc = tower::service_fn(move |r| f(r));
                    settings.grpc().server_streaming(svc, req).await
                }
                Handler::Positions(f) => {
                    let svc = tower::service_fn(move |r| f(r));
                    settings.grpc().server_streaming(svc, req).await
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use ticker_feeds::{Channel, Hub, HubConfig, Message, MessageKind, Topic};

    fn message(seq: u64) -> Arc<Message> {
        Message::encoded(
            seq,
            seq - 1,
            MessageKind::Update,
            Bytes::new(),
            Bytes::from(vec![seq as u8]),
        )
    }

    fn trades() -> Topic {
        Topic::Market {
            channel: Channel::Trades,
            instrument: 0,
        }
    }

    #[tokio::test]
    async fn live_messages_are_the_shared_bytes_unchanged() {
        let hub = Hub::default();
        let sub = hub.subscribe(trades(), None);
        hub.topic(trades()).publish(message(1));
        let stream = subscription_stream(sub, "trades".into(), |_, _| Out::Encoded(Bytes::new()));
        futures_util::pin_mut!(stream);
        let out = stream.next().await.unwrap().unwrap();
        assert_eq!(out.to_bytes(), Bytes::from(vec![1u8]));
    }

    #[tokio::test]
    async fn a_trades_subscriber_too_slow_for_its_queue_ends_with_resource_exhausted() {
        let hub = Hub::new(HubConfig {
            lossless_queue: 4,
            ..HubConfig::default()
        });
        let sub = hub.subscribe(trades(), None);
        let topic = hub.topic(trades());
        for seq in 1..=10 {
            topic.publish(message(seq));
        }
        let stream = subscription_stream(sub, "trades of BTC-USD".into(), |_, _| {
            Out::Encoded(Bytes::new())
        });
        futures_util::pin_mut!(stream);
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(
            err.message()
                .contains("subscriber too slow: trades of BTC-USD"),
            "{err}"
        );
        assert!(stream.next().await.is_none(), "nothing after the error");
    }
}
