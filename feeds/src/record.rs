//! Recording and replay of command streams.
//!
//! ## File format (version 1)
//! A 16-byte header, then records:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `TICKREC\0` |
//! | 8 | 2 | format version, `u16` little-endian (1) |
//! | 10 | 2 | command codec version ([`ticker_engine::codec::CODEC_VERSION`]) |
//! | 12 | 4 | reserved, zero |
//!
//! Each record is a `u32` little-endian length `n` followed by `n` bytes: one command in the
//! engine's binary codec (its ingress timestamp included). A file ends after the last whole
//! record; a truncated last record (a crash mid-write) is reported as such, not misread.

use std::io::{self, BufRead, Read, Write};
use std::time::{Duration, Instant};
use ticker_engine::codec::{decode_command, encode_command, CodecError, CODEC_VERSION};
use ticker_engine::{Command, Timestamp};

pub const MAGIC: [u8; 8] = *b"TICKREC\0";
pub const FORMAT_VERSION: u16 = 1;
/// Largest record accepted on replay; commands are far smaller.
pub const MAX_RECORD: u32 = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("not a tickerd recording (bad magic)")]
    BadMagic,
    #[error("recording format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    #[error("recording uses command codec version {0}; this build has {CODEC_VERSION}")]
    UnsupportedCodec(u16),
    #[error("record {index} is {len} bytes, more than the {MAX_RECORD} allowed")]
    RecordTooLarge { index: u64, len: u32 },
    #[error("record {index} is truncated (the recording ends mid-record)")]
    Truncated { index: u64 },
    #[error("record {index} does not decode: {source}")]
    Decode { index: u64, source: CodecError },
}

/// Appends commands to a recording.
pub struct Recorder<W: Write> {
    out: W,
    buf: Vec<u8>,
    records: u64,
}

impl<W: Write> Recorder<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        out.write_all(&CODEC_VERSION.to_le_bytes())?;
        out.write_all(&[0; 4])?;
        Ok(Recorder {
            out,
            buf: Vec::with_capacity(256),
            records: 0,
        })
    }

    pub fn record(&mut self, cmd: &Command) -> io::Result<()> {
        self.buf.clear();
        encode_command(cmd, &mut self.buf);
        self.out.write_all(&(self.buf.len() as u32).to_le_bytes())?;
        self.out.write_all(&self.buf)?;
        self.records += 1;
        Ok(())
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads commands back from a recording.
pub struct Replay<R: BufRead> {
    input: R,
    buf: Vec<u8>,
    index: u64,
}

impl<R: BufRead> Replay<R> {
    pub fn new(mut input: R) -> Result<Self, RecordError> {
        let mut header = [0u8; 16];
        input.read_exact(&mut header)?;
        if header[..8] != MAGIC {
            return Err(RecordError::BadMagic);
        }
        let version = u16::from_le_bytes([header[8], header[9]]);
        if version != FORMAT_VERSION {
            return Err(RecordError::UnsupportedVersion(version));
        }
        let codec = u16::from_le_bytes([header[10], header[11]]);
        if codec != CODEC_VERSION {
            return Err(RecordError::UnsupportedCodec(codec));
        }
        Ok(Replay {
            input,
            buf: Vec::with_capacity(256),
            index: 0,
        })
    }

    /// The next command, `Ok(None)` at the clean end of the recording.
    pub fn next_command(&mut self) -> Result<Option<Command>, RecordError> {
        let index = self.index;
        if self.input.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        read_record_part(&mut self.input, &mut len, index)?;
        let len = u32::from_le_bytes(len);
        if len > MAX_RECORD {
            return Err(RecordError::RecordTooLarge { index, len });
        }
        self.buf.resize(len as usize, 0);
        read_record_part(&mut self.input, &mut self.buf, index)?;
        let (cmd, used) =
            decode_command(&self.buf).map_err(|source| RecordError::Decode { index, source })?;
        if used != self.buf.len() {
            return Err(RecordError::Decode {
                index,
                source: CodecError::Truncated {
                    offset: used,
                    needed: 0,
                },
            });
        }
        self.index += 1;
        Ok(Some(cmd))
    }
}

fn read_record_part(input: &mut impl Read, buf: &mut [u8], index: u64) -> Result<(), RecordError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => RecordError::Truncated { index },
        _ => RecordError::Io(e),
    })
}

impl<R: BufRead> Iterator for Replay<R> {
    type Item = Result<Command, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_command().transpose()
    }
}

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
    use ticker_engine::{Engine, Instrument, InstrumentSpec};

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
        let mut cmds = vec![Command {
            deadline: 0,
            ts: 0,
            corr: 0,
            kind: ticker_engine::CommandKind::AddInstrument(Box::new(spec)),
        }];
        cmds.extend((0..n).map(|_| sim.next_command()));
        cmds
    }

    #[test]
    fn replaying_a_recording_gives_the_same_commands_and_events() {
        let cmds = commands(5_000);
        let mut rec = Recorder::new(Vec::new()).unwrap();
        for c in &cmds {
            rec.record(c).unwrap();
        }
        assert_eq!(rec.records(), cmds.len() as u64);
        let bytes = rec.finish().unwrap();
        let back: Vec<Command> = Replay::new(&bytes[..])
            .unwrap()
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
    fn damaged_recordings_are_reported_not_misread() {
        let cmds = commands(10);
        let mut rec = Recorder::new(Vec::new()).unwrap();
        for c in &cmds {
            rec.record(c).unwrap();
        }
        let bytes = rec.finish().unwrap();
        let cut = &bytes[..bytes.len() - 3];
        let results: Vec<_> = Replay::new(cut).unwrap().collect();
        assert!(matches!(
            results.last(),
            Some(Err(RecordError::Truncated { index: 10 }))
        ));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(Replay::new(&bad[..]), Err(RecordError::BadMagic)));
        let mut bad = bytes.clone();
        bad[8] = 9;
        assert!(matches!(
            Replay::new(&bad[..]),
            Err(RecordError::UnsupportedVersion(9))
        ));
        let mut huge = bytes[..16].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Replay::new(&huge[..]).unwrap().next_command(),
            Err(RecordError::RecordTooLarge { .. })
        ));
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
