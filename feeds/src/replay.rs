//! Replaying recorded order flow. A recording is a journal: any tickerd data directory (or a
//! copy of one) holds every command the engine took, in order, with its ingress timestamp, in
//! the one on-disk format of `docs/journal.md`; [`ticker_engine::journal::Journal`] reads it.
//! The [`Pacer`] here submits such commands at their recorded pace, or faster.

use std::time::{Duration, Instant};
use ticker_engine::Timestamp;

/// Paces a replay at recorded speed: how long to wait before submitting a command so that
/// gaps between recorded timestamps are kept (optionally scaled).
pub struct Pacer {
    start: Instant,
    first_ts: Option<Timestamp>,
    /// Replay speed as a multiple of recorded speed, in per-mille (1000 = recorded speed).
    speed_per_mille: u64,
}

impl Pacer {
    pub fn new(speed_per_mille: u64) -> Self {
        Pacer {
            start: Instant::now(),
            first_ts: None,
            speed_per_mille: speed_per_mille.max(1),
        }
    }

    /// Time to wait before submitting a command recorded at `ts` (zero when late).
    pub fn delay(&mut self, ts: Timestamp) -> Duration {
        let first = *self.first_ts.get_or_insert(ts);
        let offset_ns = ts.saturating_sub(first) as u128 * 1000 / self.speed_per_mille as u128;
        let due = Duration::from_nanos(offset_ns.min(u64::MAX as u128) as u64);
        due.saturating_sub(self.start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimConfig, Simulator};
    use rust_decimal::Decimal;
    use ticker_engine::journal::{Journal, OpenOptions, SimStorage};
    use ticker_engine::{Command, CommandKind, Engine, Instrument, InstrumentSpec};

    fn commands(n: usize) -> Vec<Command> {
        let spec = InstrumentSpec {
            symbol: "SOL-USD".into(),
            tick_size: Decimal::new(1, 3),
            lot_size: Decimal::new(1, 2),
            min_size: Decimal::new(1, 2),
            max_size: Decimal::new(100_000, 0),
            reference_price: Decimal::new(150, 0),
            band: Decimal::new(1, 1),
        };
        let ins = Instrument::new(0, spec.clone()).unwrap();
        let mut sim = Simulator::new(SimConfig::default(), &[ins], 0);
        let mut cmds = vec![Command::new(
            0,
            0,
            CommandKind::AddInstrument(Box::new(spec)),
        )];
        cmds.extend((0..n).map(|_| sim.next_command()));
        cmds
    }

    #[test]
    fn a_journaled_session_replays_to_the_same_commands_and_events() {
        let cmds = commands(5_000);
        let disk = SimStorage::new();
        let mut writer = Journal::open(disk.clone(), OpenOptions::default())
            .unwrap()
            .into_writer(1, 64 << 10)
            .unwrap();
        for run in cmds.chunks(37) {
            for c in run {
                writer.push(c);
            }
            writer.commit(0, None).unwrap();
        }
        writer.sync().unwrap();
        let journal = Journal::open(disk, OpenOptions::default()).unwrap();
        let back: Vec<Command> = journal
            .commands_from(1)
            .map(|r| r.map(|(_, c)| c))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, cmds);
        let events = |cmds: &[Command]| {
            let mut e = Engine::default();
            let mut out = Vec::new();
            for c in cmds {
                e.apply(c, &mut out);
            }
            out
        };
        assert_eq!(events(&back), events(&cmds));
    }

    #[test]
    fn pacer_keeps_recorded_gaps() {
        let mut p = Pacer::new(1000);
        assert_eq!(p.delay(1_000), Duration::ZERO);
        let d = p.delay(1_000 + 10_000_000_000);
        assert!(d > Duration::from_secs(9) && d <= Duration::from_secs(10));
        let mut fast = Pacer::new(10_000);
        fast.delay(0);
        assert!(fast.delay(50_000_000) <= Duration::from_millis(5));
    }
}
