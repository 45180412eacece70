//! The market's own command sources: the heartbeat that moves engine time (and cuts
//! snapshots), and the simulator with its simulated past.

use super::{now_ns, Entry, Market, Reply};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticker_engine::{Command, CommandKind, Instrument, InstrumentId, OrderView};
use ticker_feeds::sim::{LastPrices, SimConfig, Simulator};

/// Where a simulator resumes after a restart.
pub(super) struct SimResume {
    /// Above every client id the simulator could have used (one per command at most).
    pub(super) position: u64,
    pub(super) live: Vec<OrderView>,
    pub(super) prices: Vec<(InstrumentId, LastPrices)>,
}

impl Market {
    pub(super) fn spawn_heartbeat(self: &Arc<Self>, every: Duration) -> std::io::Result<()> {
        let weak = Arc::downgrade(self);
        // Snapshots are cut by command count, checked on the heartbeat's beat. The count runs
        // from the snapshot recovery started from, not from this start: a market that crashes
        // before its own count comes round would otherwise never cut one, and each start would
        // replay a longer tail. With several shards the count is over all their journals.
        let mut next_cut = self.journal.as_ref().map(|j| {
            (
                j.durability.clone(),
                j.recovery.snapshot.unwrap_or(0) + j.config.snapshot_every,
                j.config.snapshot_every,
            )
        });
        let handle = std::thread::Builder::new()
            .name("ticker-heartbeat".into())
            .spawn(move || loop {
                std::thread::park_timeout(every);
                let Some(market) = weak.upgrade() else { return };
                if market.stop.load(Ordering::Relaxed) {
                    return;
                }
                // A full ingress means traffic is advancing time anyway.
                if market.submit_detached(CommandKind::Heartbeat).is_ok() {
                    market.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                if let Some((durability, at, every)) = &mut next_cut {
                    let written: u64 = durability.iter().map(|d| d.written()).sum();
                    if written >= *at && market.submit_detached(CommandKind::Snapshot).is_ok() {
                        market.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                        *at = written + *every;
                    }
                }
            })?;
        self.threads.lock().push(handle);
        Ok(())
    }

    pub(super) fn simulated_instruments(&self) -> Vec<Instrument> {
        self.instruments
            .all()
            .iter()
            .map(|w| w.instrument.clone())
            .collect()
    }

    /// Runs `config.history_secs` of simulated past through the engine before the market
    /// opens: commands at `history_rate` a second stamped from that long ago up to now,
    /// journaled and published like any flow, so the candles, the 24 h statistics and the
    /// books have a past on a fresh start. Returns the first command of the live market
    /// (already drawn), for [`spawn_simulator`](Self::spawn_simulator) to submit first.
    pub(super) fn run_history(
        self: &Arc<Self>,
        sim: &mut Simulator,
        config: &SimConfig,
    ) -> std::io::Result<Option<Command>> {
        let Entry::Local(ingress) = &self.entry else {
            return Ok(None);
        };
        let closed = || std::io::Error::other("the engine stopped while simulating the past");
        let span = config.history_secs.saturating_mul(1_000_000_000);
        let started = Instant::now();
        let opened_at = now_ns();
        let past = opened_at.saturating_sub(span);
        self.stats.latency_from.store(opened_at, Ordering::Relaxed);
        sim.set_rate(config.history_rate);
        ingress.set_backfill(true);
        let mut commands = 0u64;
        let mut pending = sim.next_command();
        let first_live = loop {
            let next = sim.next_command();
            let cmd = Command {
                ts: past + pending.ts,
                ..self.command(pending.kind)
            };
            commands += 1;
            if next.ts >= span {
                // The past's last command: once it has its reply, every command before it
                // has been applied and published (one producer, one ring, in order).
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                self.submit(cmd, Reply::Blocking(tx), true)
                    .map_err(|_| closed())?;
                rx.recv().map_err(|_| closed())?.map_err(|_| closed())?;
                break next;
            }
            self.submit_unanswered(ingress, cmd).map_err(|_| closed())?;
            pending = next;
        };
        ingress.set_backfill(false);
        sim.set_rate(config.rate);
        tracing::info!(
            "simulated the past {} s: {commands} commands in {:.1} s",
            config.history_secs,
            started.elapsed().as_secs_f64()
        );
        Ok(Some(first_live))
    }

    /// The simulator's thread: submits its commands at the simulated pace, the first (if the
    /// past was simulated) being `carried`. Simulated time past the history maps to wall time
    /// from now.
    pub(super) fn spawn_simulator(
        self: &Arc<Self>,
        mut sim: Simulator,
        carried: Option<Command>,
    ) -> std::io::Result<()> {
        let weak = Arc::downgrade(self);
        let offset = Duration::from_nanos(sim.now());
        let handle = std::thread::Builder::new()
            .name("ticker-simulator".into())
            .spawn(move || {
                let start = Instant::now();
                let mut carried = carried;
                loop {
                    let cmd = carried.take().unwrap_or_else(|| sim.next_command());
                    // Keep the simulated pace against the wall clock.
                    let due = Duration::from_nanos(cmd.ts).saturating_sub(offset);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::park_timeout(wait);
                    }
                    let Some(market) = weak.upgrade() else { return };
                    if market.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let cmd = market.command(cmd.kind);
                    let Entry::Local(ingress) = &market.entry else {
                        return;
                    };
                    if market.submit_unanswered(ingress, cmd).is_err() {
                        return;
                    }
                }
            })?;
        self.threads.lock().push(handle);
        Ok(())
    }
}
