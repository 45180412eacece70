//! `tickerd`: the ticker engine as one program.
//!
//! Today it builds the engine with its embedded default instruments and reports them; the
//! market simulator, the gRPC front and the WebSocket front are wired in by their issues.

fn main() -> anyhow::Result<()> {
    let mut engine = ticker_engine::Engine::default();
    let mut events = Vec::new();
    for (i, spec) in ticker_servers::defaults::instruments()
        .into_iter()
        .enumerate()
    {
        let cmd = ticker_engine::Command::new(
            0,
            i as u64,
            ticker_engine::CommandKind::AddInstrument(Box::new(spec)),
        );
        engine.apply(&cmd, &mut events);
    }
    for book in engine.books() {
        let i = book.instrument();
        println!(
            "instrument {} tick {} lot {} band [{}, {}]",
            i.spec.symbol,
            i.spec.tick_size,
            i.spec.lot_size,
            i.ticks_to_price(i.band_low),
            i.ticks_to_price(i.band_high)
        );
    }
    println!(
        "tickerd {}: matching engine ready with {} instruments; the simulator, gRPC (:50051) and \
         WebSocket (:8080) fronts are not built yet",
        env!("CARGO_PKG_VERSION"),
        engine.books().len()
    );
    Ok(())
}
