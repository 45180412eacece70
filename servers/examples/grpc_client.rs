//! A tiny tickerd gRPC client: lists instruments, places an order, and prints a few ticker and
//! trade messages.
//!
//! ```sh
//! cargo run -p ticker-servers --example grpc_server -- --token alice-token=1 &
//! cargo run -p ticker-servers --example grpc_client -- http://127.0.0.1:50051 alice-token
//! ```

use clap::Parser;
use ticker_proto::v1 as pb;
use ticker_proto::v1::market_data_service_client::MarketDataServiceClient;
use ticker_proto::v1::order_service_client::OrderServiceClient;
use tonic::Request;

/// A tiny tickerd gRPC client.
#[derive(Parser, Debug)]
struct Flags {
    /// The server's gRPC address.
    #[arg(default_value = "http://127.0.0.1:50051")]
    address: String,
    /// The bearer token to place the order with.
    #[arg(default_value = "alice-token")]
    token: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Flags { address, token } = Flags::parse();
    let channel = tonic::transport::Channel::from_shared(address)?
        .connect()
        .await?;

    let mut market_data = MarketDataServiceClient::new(channel.clone());
    let instruments = market_data
        .list_instruments(pb::ListInstrumentsRequest {})
        .await?
        .into_inner()
        .instruments;
    for i in &instruments {
        println!(
            "{} tick {} lot {} band [{}, {}]",
            i.symbol, i.tick_size, i.lot_size, i.band_low, i.band_high
        );
    }

    // Prices and sizes are decimal strings on the instrument's grid.
    let mut orders = OrderServiceClient::new(channel);
    let mut place = Request::new(pb::PlaceOrderRequest {
        instrument: "BTC-USD".into(),
        side: pb::Side::Buy as i32,
        price: "60000.00".into(),
        size: "0.01".into(),
        ..Default::default()
    });
    place
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    match orders.place_order(place).await {
        Ok(r) => println!("placed: {:?}", r.into_inner()),
        Err(status) => println!("place failed: {} {}", status.code(), status.message()),
    }

    let mut stream = market_data
        .subscribe(pb::SubscribeRequest {
            instruments: vec!["BTC-USD".into()],
            channels: vec![pb::Channel::Ticker as i32, pb::Channel::Trades as i32],
            ..Default::default()
        })
        .await?
        .into_inner();
    for _ in 0..10 {
        let Some(m) = stream.message().await? else {
            break;
        };
        println!(
            "{} seq {} (prev {}): {:?}",
            m.instrument, m.seq, m.prev_seq, m.payload
        );
    }
    Ok(())
}
