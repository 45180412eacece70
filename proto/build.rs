//! Compiles `ticker/v1/*.proto` with protox (a protobuf compiler in Rust), so a fresh machine
//! needs no system `protoc`. Writes the prost messages, the tonic services when the `grpc`
//! feature is on, and the encoded descriptor set that server reflection serves.

use prost::Message;
use std::path::PathBuf;

const PROTOS: [&str; 5] = [
    "ticker/v1/common.proto",
    "ticker/v1/orders.proto",
    "ticker/v1/market_data.proto",
    "ticker/v1/risk.proto",
    "ticker/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("ticker_v1_descriptor.bin"), fds.encode_to_vec())?;
    // Cargo tells build scripts which features are on; the service code needs tonic.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .build_transport(grpc)
        .compile_fds(fds)?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
