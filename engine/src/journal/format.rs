//! The journal's bytes: segment headers and records, as pure functions on buffers so every
//! torn or damaged layout can be tested without a file (docs/journal.md has the same tables).
//!
//! A segment is a 32-byte header, then records back to back:
//!
//! | offset | size | segment header field |
//! |---|---|---|
//! | 0 | 8 | magic `TICKJRNL` |
//! | 8 | 2 | format version ([`FORMAT_VERSION`]) |
//! | 10 | 2 | command codec version ([`crate::codec::CODEC_VERSION`]) |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 | journal index of the segment's first command |
//! | 24 | 4 | CRC32C of bytes 0..24 |
//! | 28 | 4 | reserved, zero |
//!
//! | offset | size | record field |
//! |---|---|---|
//! | 0 | 4 | CRC32C of bytes 4..32+len (the rest of the header and the payload) |
//! | 4 | 4 | payload length `len` |
//! | 8 | 8 | journal index of the record's first command |
//! | 16 | 4 | commands in the record (≥ 1) |
//! | 20 | 4 | record kind: 1 = commands, 2 = a shard's commands with a merge ticket |
//! | 24 | 8 | journal index known durable (synced) when the record was written |
//! | 32 | len | the commands, each in the engine's binary codec, back to back; in a kind 2 record followed by the 8-byte merge ticket |
//!
//! A shard of a sharded market (`market.shards` > 1) writes kind 2 for every run whose events
//! it publishes: the ticket is the place of that run's events in the one merged stream
//! (`crate::pipeline::ShardedEgress`), taken from a counter all shards share, so recovery
//! interleaves the shards' journals exactly as the market published them. A run that
//! published nothing (a heartbeat) is kind 1: its place among other shards' runs changes no
//! event.
//!
//! Every integer is little-endian. One record holds the commands of one engine run (one group
//! of commands applied together), so a record is also the unit that becomes durable at once.
//! The durable index lets recovery tell a torn end from damage: a bad record whose commands a
//! later, intact record says were already durable was damaged after the fact; otherwise it is
//! what a crash left of writes that were never confirmed.

use crate::codec::{decode_command, encode_command, CodecError, CODEC_VERSION};
use crate::command::Command;

pub const SEGMENT_MAGIC: [u8; 8] = *b"TICKJRNL";
/// Version of the journal's framing (segment header and record header).
pub const FORMAT_VERSION: u16 = 1;
pub const SEGMENT_HEADER_LEN: usize = 32;
pub const RECORD_HEADER_LEN: usize = 32;
/// A record of commands.
pub const RECORD_COMMANDS: u32 = 1;
/// A record of a shard's commands whose payload ends with the run's merge ticket.
pub const RECORD_TICKETED_COMMANDS: u32 = 2;
/// Bytes of the merge ticket at the end of a [`RECORD_TICKETED_COMMANDS`] payload.
const TICKET_LEN: usize = 8;
/// Largest payload a reader accepts. A record holds one engine run (at most `max_batch`
/// commands of at most a few hundred bytes), so anything near this is a damaged length.
pub const MAX_RECORD_PAYLOAD: u32 = 64 << 20;

/// A segment's header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Journal index of the first command in the segment (indexes start at 1).
    pub first: u64,
    pub codec: u16,
}

/// Why a segment header is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the segment is {len} bytes, shorter than its {SEGMENT_HEADER_LEN}-byte header")]
    Short { len: usize },
    #[error("not a tickerd journal segment (bad magic)")]
    BadMagic,
    #[error("segment header checksum mismatch")]
    BadChecksum,
    #[error("journal format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    Version(u16),
    #[error("journal uses command codec version {0}; this build has {CODEC_VERSION}")]
    Codec(u16),
}

impl SegmentHeader {
    pub fn new(first: u64) -> Self {
        SegmentHeader {
            first,
            codec: CODEC_VERSION,
        }
    }

    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        h[0..8].copy_from_slice(&SEGMENT_MAGIC);
        h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[10..12].copy_from_slice(&self.codec.to_le_bytes());
        h[16..24].copy_from_slice(&self.first.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..24]);
        h[24..28].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        if bytes.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderError::Short { len: bytes.len() });
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if crc32c::crc32c(&bytes[0..24]) != u32_at(bytes, 24) {
            return Err(HeaderError::BadChecksum);
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let codec = u16::from_le_bytes([bytes[10], bytes[11]]);
        if codec != CODEC_VERSION {
            return Err(HeaderError::Codec(codec));
        }
        Ok(SegmentHeader {
            first: u64_at(bytes, 16),
            codec,
        })
    }
}

/// Builds one record in a reused buffer: `begin`, `push` each command, `finish`.
#[derive(Debug, Default)]
pub struct RecordBuilder {
    buf: Vec<u8>,
    first: u64,
    count: u32,
}

impl RecordBuilder {
    pub fn with_capacity(bytes: usize) -> Self {
        RecordBuilder {
            buf: Vec::with_capacity(bytes),
            first: 0,
            count: 0,
        }
    }

    /// Starts a record whose first command will have journal index `first`.
    pub fn begin(&mut self, first: u64) {
        self.buf.clear();
        self.buf.resize(RECORD_HEADER_LEN, 0);
        self.first = first;
        self.count = 0;
    }

    pub fn push(&mut self, command: &Command) {
        encode_command(command, &mut self.buf);
        self.count += 1;
    }

    /// Commands pushed since `begin`.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Fills in the header and returns the whole record; `durable` is the journal index
    /// known durable now, `ticket` the run's merge ticket if it has one (a kind 2 record).
    pub fn finish(&mut self, durable: u64, ticket: Option<u64>) -> &[u8] {
        let kind = match ticket {
            None => RECORD_COMMANDS,
            Some(ticket) => {
                self.buf.extend_from_slice(&ticket.to_le_bytes());
                RECORD_TICKETED_COMMANDS
            }
        };
        let len = (self.buf.len() - RECORD_HEADER_LEN) as u32;
        self.buf[4..8].copy_from_slice(&len.to_le_bytes());
        self.buf[8..16].copy_from_slice(&self.first.to_le_bytes());
        self.buf[16..20].copy_from_slice(&self.count.to_le_bytes());
        self.buf[20..24].copy_from_slice(&kind.to_le_bytes());
        self.buf[24..32].copy_from_slice(&durable.to_le_bytes());
        let crc = crc32c::crc32c(&self.buf[4..]);
        self.buf[0..4].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }
}

/// A record that checked out: where its commands are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub first: u64,
    pub count: u32,
    /// Journal index known durable when it was written.
    pub durable: u64,
    /// The run's place in a sharded market's merged stream (kind 2 records only).
    pub ticket: Option<u64>,
    /// The commands' bytes (without the ticket).
    pub payload: &'a [u8],
    /// Offset just past the record.
    pub end: usize,
}

impl Record<'_> {
    /// Journal index of the record's last command.
    pub fn last(&self) -> u64 {
        self.first + self.count as u64 - 1
    }

    /// Decodes the record's commands; an error names the command's position in the payload.
    pub fn commands(&self) -> RecordCommands<'_> {
        RecordCommands {
            payload: self.payload,
            pos: 0,
            left: self.count,
        }
    }
}

/// The commands of one record, in order.
pub struct RecordCommands<'a> {
    payload: &'a [u8],
    pos: usize,
    left: u32,
}

/// A record whose checksum holds but whose commands do not decode: written by a different
/// build, or a bug. Never a torn write (the checksum would not hold).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("command at payload offset {offset} does not decode: {source}")]
pub struct PayloadError {
    pub offset: usize,
    pub source: CodecError,
}

impl Iterator for RecordCommands<'_> {
    type Item = Result<Command, PayloadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            if self.pos == self.payload.len() {
                return None;
            }
            // Bytes beyond the counted commands: reported once.
            let offset = std::mem::replace(&mut self.pos, self.payload.len());
            return Some(Err(PayloadError {
                offset,
                source: CodecError::Truncated { offset, needed: 0 },
            }));
        }
        let offset = self.pos;
        match decode_command(&self.payload[self.pos..]) {
            Ok((command, used)) => {
                self.pos += used;
                self.left -= 1;
                Some(Ok(command))
            }
            Err(source) => {
                self.left = 0;
                self.pos = self.payload.len();
                Some(Err(PayloadError { offset, source }))
            }
        }
    }
}

/// What is found at an offset where a record should start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    Record(Record<'a>),
    /// The buffer ends inside the record's header or payload.
    Incomplete {
        needed: usize,
    },
    /// The header names an impossible length, count or kind.
    BadHeader {
        reason: &'static str,
    },
    BadChecksum,
}

/// Reads the record starting at `at`.
pub fn parse_record(buf: &[u8], at: usize) -> Parsed<'_> {
    let rest = &buf[at.min(buf.len())..];
    if rest.len() < RECORD_HEADER_LEN {
        return Parsed::Incomplete {
            needed: RECORD_HEADER_LEN - rest.len(),
        };
    }
    let len = u32_at(rest, 4);
    let count = u32_at(rest, 16);
    let kind = u32_at(rest, 20);
    // The length is checked before it is used, so a damaged one cannot make us read far.
    if len > MAX_RECORD_PAYLOAD {
        return Parsed::BadHeader {
            reason: "payload length above the limit",
        };
    }
    let end = RECORD_HEADER_LEN + len as usize;
    if rest.len() < end {
        return Parsed::Incomplete {
            needed: end - rest.len(),
        };
    }
    if crc32c::crc32c(&rest[4..end]) != u32_at(rest, 0) {
        return Parsed::BadChecksum;
    }
    let (ticket, commands_end) = match kind {
        RECORD_COMMANDS => (None, end),
        RECORD_TICKETED_COMMANDS if len as usize >= TICKET_LEN => {
            (Some(u64_at(rest, end - TICKET_LEN)), end - TICKET_LEN)
        }
        RECORD_TICKETED_COMMANDS => {
            return Parsed::BadHeader {
                reason: "a ticketed record too short for its ticket",
            }
        }
        _ => {
            return Parsed::BadHeader {
                reason: "unknown record kind",
            }
        }
    };
    if count == 0 {
        return Parsed::BadHeader {
            reason: "a record with no commands",
        };
    }
    Parsed::Record(Record {
        first: u64_at(rest, 8),
        count,
        durable: u64_at(rest, 24),
        ticket,
        payload: &rest[RECORD_HEADER_LEN..commands_end],
        end: at + end,
    })
}

/// Bytes up to the last one that is not zero: where a preallocated segment's records end
/// (records never start with zeros; see `docs/journal.md`).
pub fn written_len(bytes: &[u8]) -> usize {
    // Block by block from the end: a preallocated segment is mostly zeros, and OR-ing a block
    // vectorizes where a byte-by-byte search does not.
    const BLOCK: usize = 4096;
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = &bytes[start..end];
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return start + block.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        }
        end = start;
    }
    0
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CommandKind, Place};
    use crate::types::Side;

    fn command(i: u64) -> Command {
        Command::new(
            i,
            i,
            CommandKind::Place(Place::limit(1 + i % 3, 0, Side::Buy, 100 + i as i64, 1)),
        )
    }

    fn record(first: u64, n: u64) -> Vec<u8> {
        let mut b = RecordBuilder::default();
        b.begin(first);
        for i in 0..n {
            b.push(&command(first + i));
        }
        b.finish(0, None).to_vec()
    }

    #[test]
    fn a_record_reads_back_its_commands() {
        let bytes = record(7, 3);
        let Parsed::Record(r) = parse_record(&bytes, 0) else {
            panic!("a whole record parses")
        };
        assert_eq!((r.first, r.count, r.last(), r.end), (7, 3, 9, bytes.len()));
        let back: Vec<Command> = r.commands().collect::<Result<_, _>>().unwrap();
        assert_eq!(back, (7..10).map(command).collect::<Vec<_>>());
    }

    #[test]
    fn a_ticketed_record_reads_back_its_ticket_and_commands() {
        let mut b = RecordBuilder::default();
        b.begin(7);
        b.push(&command(7));
        b.push(&command(8));
        let bytes = b.finish(3, Some(0xDEAD_BEEF_0042)).to_vec();
        let Parsed::Record(r) = parse_record(&bytes, 0) else {
            panic!("a whole record parses")
        };
        assert_eq!(
            (r.ticket, r.durable, r.end),
            (Some(0xDEAD_BEEF_0042), 3, bytes.len())
        );
        let back: Vec<Command> = r.commands().collect::<Result<_, _>>().unwrap();
        assert_eq!(back, vec![command(7), command(8)]);
        // The builder starts the next record without the last one's ticket.
        b.begin(9);
        b.push(&command(9));
        let plain = b.finish(3, None).to_vec();
        let Parsed::Record(r) = parse_record(&plain, 0) else {
            panic!("parses")
        };
        assert_eq!((r.ticket, r.commands().count()), (None, 1));
        // A kind 2 record too short to hold a ticket is refused, not misread.
        let mut short = plain.clone();
        short[20..24].copy_from_slice(&RECORD_TICKETED_COMMANDS.to_le_bytes());
        short.truncate(RECORD_HEADER_LEN + 4);
        short[4..8].copy_from_slice(&4u32.to_le_bytes());
        let crc = crc32c::crc32c(&short[4..]);
        short[0..4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(parse_record(&short, 0), Parsed::BadHeader { .. }));
    }

    #[test]
    fn every_cut_of_a_record_is_incomplete_never_misread() {
        let bytes = record(1, 4);
        for cut in 0..bytes.len() {
            assert!(
                matches!(parse_record(&bytes[..cut], 0), Parsed::Incomplete { .. }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let bytes = record(1, 2);
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[byte] ^= 1 << bit;
                match parse_record(&bad, 0) {
                    Parsed::Record(_) => panic!("flip of bit {bit} of byte {byte} went unseen"),
                    Parsed::Incomplete { .. } | Parsed::BadHeader { .. } | Parsed::BadChecksum => {}
                }
            }
        }
    }

    #[test]
    fn a_huge_length_is_refused_before_it_is_used() {
        let mut bytes = record(1, 1);
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse_record(&bytes, 0), Parsed::BadHeader { .. }));
    }

    #[test]
    fn segment_headers_round_trip_and_reject_damage() {
        let h = SegmentHeader::new(1234).encode();
        assert_eq!(SegmentHeader::decode(&h).unwrap().first, 1234);
        assert_eq!(
            SegmentHeader::decode(&h[..31]),
            Err(HeaderError::Short { len: 31 })
        );
        let mut bad = h;
        bad[0] = b'X';
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderError::BadMagic));
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderError::BadChecksum));
    }

    #[test]
    fn a_record_whose_count_disagrees_with_its_payload_is_an_error() {
        let mut b = RecordBuilder::default();
        b.begin(1);
        b.push(&command(1));
        b.push(&command(2));
        let mut bytes = b.finish(0, None).to_vec();
        // Claim one command: the second one is then trailing bytes.
        bytes[16..20].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[4..]);
        bytes[0..4].copy_from_slice(&crc.to_le_bytes());
        let Parsed::Record(r) = parse_record(&bytes, 0) else {
            panic!("checksum holds")
        };
        let results: Vec<_> = r.commands().collect();
        assert!(results[0].is_ok());
        assert!(results[1].is_err());
    }
}
