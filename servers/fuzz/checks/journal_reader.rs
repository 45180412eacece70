//! What tickerd reads back from its data directory, on arbitrary bytes: segment headers,
//! records and the commands in them, snapshot files, and the engine and feeds sections a
//! snapshot holds. Never a panic; a damaged layout is a typed answer (incomplete, bad header,
//! bad checksum, a payload error); every command that decodes encodes back to itself; a
//! snapshot file that decodes re-encodes to the same file; an engine snapshot that decodes is
//! restored or refused, never half-applied into a panic.
//!
//! Random bytes rarely carry a valid CRC32C, so byte 0 can ask for the checksums to be fixed
//! up before reading: then the fuzzer reaches the command codec and the snapshot decoders
//! through the framing instead of stopping at every checksum.
//!
//! Byte 0: bits 0–1 pick what the rest is (0, 1: a segment after a valid header; 2: a snapshot
//! file; 3: an engine snapshot and a feeds snapshot section); bit 2 fixes the checksums.

use ticker_engine::codec::{decode_command, encode_command};
use ticker_engine::journal::format::{
    parse_record, Parsed, SegmentHeader, MAX_RECORD_PAYLOAD, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use ticker_engine::journal::snapshot_file::SnapshotFile;
use ticker_engine::{Engine, EngineConfig, EngineSnapshot};
use ticker_feeds::snapshot::FeedsSnapshot;

/// One input; panics on a property that does not hold.
pub fn run(data: &[u8]) {
    let [control, rest @ ..] = data else {
        return;
    };
    let fix = control & 4 != 0;
    match control & 3 {
        0 | 1 => segment(rest, fix),
        2 => snapshot_file(rest, fix),
        _ => sections(rest),
    }
}

fn segment(body: &[u8], fix: bool) {
    let header = SegmentHeader {
        first: 1,
        codec: ticker_engine::codec::CODEC_VERSION,
    };
    let mut buf = header.encode().to_vec();
    buf.extend_from_slice(body);
    assert_eq!(SegmentHeader::decode(&buf), Ok(header));
    let mut at = SEGMENT_HEADER_LEN;
    loop {
        if fix {
            fix_record_checksum(&mut buf, at);
        }
        match parse_record(&buf, at) {
            Parsed::Record(r) => {
                assert!(r.end > at && r.end <= buf.len());
                assert!(r.count >= 1);
                for command in r.commands() {
                    let Ok(command) = command else {
                        break;
                    };
                    let mut again = Vec::new();
                    encode_command(&command, &mut again);
                    let (back, used) = decode_command(&again).expect("an encoding decodes");
                    assert_eq!(used, again.len());
                    assert_eq!(back, command);
                }
                at = r.end;
            }
            Parsed::Incomplete { needed } => {
                assert!(needed > 0);
                return;
            }
            Parsed::BadHeader { reason } => {
                assert!(!reason.is_empty());
                return;
            }
            Parsed::BadChecksum => return,
        }
    }
}

/// Writes the CRC32C the record at `at` should carry, when its length fits the buffer.
fn fix_record_checksum(buf: &mut [u8], at: usize) {
    let Some(rest) = buf.get_mut(at..) else {
        return;
    };
    if rest.len() < RECORD_HEADER_LEN {
        return;
    }
    let len = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    let end = RECORD_HEADER_LEN + len as usize;
    if len > MAX_RECORD_PAYLOAD || rest.len() < end {
        return;
    }
    let crc = crc32c::crc32c(&rest[4..end]);
    rest[0..4].copy_from_slice(&crc.to_le_bytes());
}

fn snapshot_file(bytes: &[u8], fix: bool) {
    let mut bytes = bytes.to_vec();
    if fix && bytes.len() >= 28 {
        let crc = crc32c::crc32c(&bytes[0..24]);
        bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    }
    match SnapshotFile::decode(&bytes) {
        Ok(file) => {
            let again = SnapshotFile::decode(&file.encode()).expect("an encoding decodes");
            assert_eq!(again, file);
        }
        Err(why) => assert!(!why.is_empty()),
    }
}

fn sections(bytes: &[u8]) {
    if let Ok(snapshot) = postcard::from_bytes::<EngineSnapshot>(bytes) {
        // Small, so each input is cheap; a snapshot holding more than this is refused.
        let config = EngineConfig {
            order_capacity: 4096,
            ladder_ticks: 4096,
            index_capacity: 1024,
            ..EngineConfig::default()
        };
        let _ = Engine::restore(config, &snapshot);
    }
    let _ = FeedsSnapshot::decode(bytes);
}
