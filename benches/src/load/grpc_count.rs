//! The cheap gRPC subscriber of `fanout` mode: one HTTP/2 connection with one
//! `MarketDataService/Subscribe` stream, whose messages are counted as they arrive, undecoded
//! (the gRPC counterpart of [`super::frame_count`]).

use super::frame_count::Totals;
use super::stream::RawCodec;
use futures_util::FutureExt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use ticker_proto::v1 as pb;
use tokio::sync::watch;

/// Connects, subscribes to `channels` of `instrument` and counts messages until `stop`.
/// `connecting` is held until the stream is open, to bound the connections opening at once.
pub async fn run(
    addr: SocketAddr,
    instrument: String,
    channels: Vec<pb::Channel>,
    totals: Arc<Totals>,
    connecting: tokio::sync::OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let path = http::uri::PathAndQuery::from_static("/ticker.v1.MarketDataService/Subscribe");
    let request = pb::SubscribeRequest {
        instruments: vec![instrument],
        channels: channels.into_iter().map(|c| c as i32).collect(),
        ..Default::default()
    };
    let mut stream = grpc
        .server_streaming(tonic::Request::new(request), path, RawCodec::default())
        .await?
        .into_inner();
    drop(connecting);
    totals.subscribed.fetch_add(1, Ordering::Relaxed);
    loop {
        let next = tokio::select! {
            _ = stop.changed() => return Ok(()),
            m = stream.message() => m,
        };
        let Ok(Some(mut m)) = next else {
            totals.closed.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        // Count what has arrived without waiting, then add it to the totals at once.
        let (mut messages, mut bytes) = (0u64, 0u64);
        loop {
            messages += 1;
            // 5 bytes of gRPC framing per message; HTTP/2 frame headers not counted.
            bytes += m.len() as u64 + 5;
            match stream.message().now_or_never() {
                Some(Ok(Some(more))) => m = more,
                _ => break,
            }
        }
        totals.frames.fetch_add(messages, Ordering::Relaxed);
        totals.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}
