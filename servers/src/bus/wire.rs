//! What goes over NATS: event messages (one command's events each), commands and their
//! replies. Events and commands use the journal's codec (`ticker_engine::codec`, docs/journal.md),
//! so the bus adds no second encoding of the engine's types.

use ticker_engine::codec::{decode_command, decode_event, encode_command, encode_event};
use ticker_engine::{Command, Event, InstrumentId};

/// The first byte of every payload: the bus format's version.
pub const VERSION: u8 = 1;
/// The last event seq of an event message (its first is the `Nats-Msg-Id`).
pub const LAST_SEQ_HEADER: &str = "Tickerd-Last-Seq";
/// On a command reply that carries no events: why (`busy`, `shutting-down`, `bad-request`).
pub const ERROR_HEADER: &str = "Tickerd-Error";
/// Object store metadata of a snapshot: the engine seq it was cut at, and the stream sequence
/// of the last message it covers.
pub const SNAPSHOT_OBJECT: &str = "feeds";
pub const SNAPSHOT_SEQ: &str = "seq";
pub const SNAPSHOT_STREAM_SEQ: &str = "stream_seq";

/// Splits a batch into one slice per command: each outcome event starts one, and the events
/// before a batch's first outcome (a heartbeat's expiries) are one of their own. The engine
/// never splits a command across batches, so the split depends only on the events.
pub fn per_command(events: &[Event]) -> impl Iterator<Item = &[Event]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest[1..]
            .iter()
            .position(|e| e.kind.outcome_corr().is_some())
            .map_or(rest.len(), |p| p + 1);
        let (head, tail) = rest.split_at(end);
        rest = tail;
        Some(head)
    })
}

/// The one instrument a command's events are about, or `None` (no instrument, or several:
/// a mass cancel or a kill switch across instruments).
pub fn subject_instrument(events: &[Event]) -> Option<InstrumentId> {
    let mut found = None;
    for e in events {
        match (e.kind.instrument(), found) {
            (Some(i), None) => found = Some(i),
            (Some(i), Some(f)) if i != f => return None,
            _ => {}
        }
    }
    found
}

/// Appends an event message's payload.
pub fn encode_events(events: &[Event], out: &mut Vec<u8>) {
    out.push(VERSION);
    for e in events {
        encode_event(e, out);
    }
}

/// Reads an event message's payload: every event, in order, with consecutive seqs.
pub fn decode_events(payload: &[u8]) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    decode_events_into(payload, &mut events)?;
    Ok(events)
}

/// [`decode_events`], appending to `events` (left as it was on an error).
pub fn decode_events_into(payload: &[u8], events: &mut Vec<Event>) -> Result<(), String> {
    let body = versioned(payload)?;
    let start = events.len();
    let mut at = 0;
    let mut prev: Option<u64> = None;
    while at < body.len() {
        let decoded = decode_event(&body[at..]).map_err(|e| format!("at byte {at}: {e}"));
        let (e, used) = match decoded {
            Ok(d) => d,
            Err(why) => {
                events.truncate(start);
                return Err(why);
            }
        };
        if let Some(p) = prev.filter(|p| e.seq != p + 1) {
            events.truncate(start);
            return Err(format!("event {} follows event {p}", e.seq));
        }
        prev = Some(e.seq);
        events.push(e);
        at += used;
    }
    if prev.is_none() {
        return Err("an event message with no events".into());
    }
    Ok(())
}

pub fn encode_command_request(cmd: &Command) -> Vec<u8> {
    let mut out = vec![VERSION];
    encode_command(cmd, &mut out);
    out
}

pub fn decode_command_request(payload: &[u8]) -> Result<Command, String> {
    let body = versioned(payload)?;
    let (cmd, used) = decode_command(body).map_err(|e| e.to_string())?;
    if used != body.len() {
        return Err(format!("{} bytes after the command", body.len() - used));
    }
    Ok(cmd)
}

/// A command's reply is its events, encoded like an event message (possibly none: a
/// heartbeat).
pub fn decode_reply(payload: &[u8]) -> Result<Vec<Event>, String> {
    if payload.len() == 1 {
        versioned(payload)?;
        return Ok(Vec::new());
    }
    decode_events(payload)
}

fn versioned(payload: &[u8]) -> Result<&[u8], String> {
    match payload.split_first() {
        Some((&VERSION, body)) => Ok(body),
        Some((v, _)) => Err(format!(
            "bus format version {v}; this build reads {VERSION}"
        )),
        None => Err("an empty payload".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticker_engine::{
        CommandKind, Engine, EngineConfig, EventKind, InstrumentSpec, Place, Side,
    };

    fn market_events() -> Vec<Event> {
        let spec = crate::defaults::instruments()[0].clone();
        let at = ticker_engine::Instrument::new(0, spec)
            .unwrap()
            .reference_ticks;
        let mut engine = Engine::new(EngineConfig::default());
        let mut events = Vec::new();
        let mut corr = 0;
        let mut run = |kind: CommandKind, events: &mut Vec<Event>| {
            corr += 1;
            let cmd = Command {
                deadline: 0,
                ts: corr * 1_000,
                corr,
                kind,
            };
            engine.apply(&cmd, events);
        };
        for symbol in ["AAA-USD", "BBB-USD"] {
            let spec = InstrumentSpec {
                symbol: symbol.into(),
                ..crate::defaults::instruments()[0].clone()
            };
            run(CommandKind::AddInstrument(Box::new(spec)), &mut events);
        }
        run(
            CommandKind::Place(Place::limit(1, 0, Side::Sell, at, 5)),
            &mut events,
        );
        run(
            CommandKind::Place(Place::limit(2, 1, Side::Sell, at, 5)),
            &mut events,
        );
        run(
            CommandKind::Place(Place::limit(3, 0, Side::Buy, at, 3)),
            &mut events,
        );
        run(CommandKind::SessionClosed { session: 99 }, &mut events);
        run(CommandKind::Heartbeat, &mut events);
        events
    }

    #[test]
    fn a_batch_splits_into_commands_whatever_the_batching() {
        let events = market_events();
        let whole: Vec<&[Event]> = per_command(&events).collect();
        assert_eq!(whole.len(), 6, "two adds, three places, one session close");
        // Split at a command boundary, as the engine batches: same messages.
        let cut = whole[0].len() + whole[1].len() + whole[2].len();
        let mut parts: Vec<&[Event]> = per_command(&events[..cut]).collect();
        parts.extend(per_command(&events[cut..]));
        assert_eq!(parts, whole);
        assert_eq!(subject_instrument(whole[0]), Some(0));
        assert!(matches!(whole[3][0].kind, EventKind::PlaceAccepted { .. }));
        assert_eq!(subject_instrument(whole[3]), Some(1));
        assert!(whole[4]
            .iter()
            .any(|e| matches!(e.kind, EventKind::Trade { .. })));
        assert_eq!(subject_instrument(whole[4]), Some(0));
    }

    #[test]
    fn event_messages_round_trip_and_refuse_damage() {
        let events = market_events();
        for chunk in per_command(&events) {
            let mut out = Vec::new();
            encode_events(chunk, &mut out);
            assert_eq!(decode_events(&out).unwrap(), chunk);
            assert!(decode_events(&out[..out.len() - 1]).is_err());
            out[0] = 9;
            assert!(decode_events(&out).unwrap_err().contains("version 9"));
        }
        let mut out = Vec::new();
        encode_events(&[events[0].clone(), events[2].clone()], &mut out);
        assert!(decode_events(&out).unwrap_err().contains("follows"));
        assert_eq!(decode_reply(&[VERSION]).unwrap(), Vec::<Event>::new());
    }

    #[test]
    fn commands_round_trip() {
        let cmd = Command {
            deadline: 7,
            ts: 8,
            corr: 9,
            kind: CommandKind::Place(Place::limit(1, 0, Side::Buy, 10, 2)),
        };
        let bytes = encode_command_request(&cmd);
        assert_eq!(decode_command_request(&bytes).unwrap(), cmd);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_command_request(&longer).is_err());
    }
}
