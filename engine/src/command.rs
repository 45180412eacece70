//! Commands: everything the engine can be asked to do. One enum, as exchange-core's many
//! command classes would be in Rust.

use crate::instrument::InstrumentSpec;
use crate::risk::Limits;
use crate::types::*;
use serde::{Deserialize, Serialize};

/// A command with the ingress timestamp and the caller's correlation id.
///
/// The engine never reads a clock: `ts` (stamped at ingress; the threaded pipeline can stamp it
/// when the engine thread takes the command) drives GTD expiry and deadlines and is copied onto
/// every event the command produces, so replaying the same commands gives the same events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub ts: Timestamp,
    pub corr: Correlation,
    /// The caller gives up after this time: a command whose `ts` is later is rejected with
    /// [`crate::RejectReason::DeadlineExceeded`] without being executed. `0`: no deadline.
    pub deadline: Timestamp,
    pub kind: CommandKind,
}

impl Command {
    /// A command with no deadline.
    pub fn new(ts: Timestamp, corr: Correlation, kind: CommandKind) -> Self {
        Command {
            ts,
            corr,
            deadline: 0,
            kind,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandKind {
    Place(Place),
    Cancel(Cancel),
    Amend(Amend),
    MassCancel(MassCancel),
    /// The order-entry session ended: cancel every live order tagged with it.
    SessionClosed {
        session: SessionId,
    },
    /// Admin: add an instrument; it gets the next dense id.
    AddInstrument(Box<InstrumentSpec>),
    /// Admin: stop trading an instrument. New orders and amends are rejected; cancels work.
    Halt {
        instrument: InstrumentId,
    },
    /// Admin: resume trading after a halt.
    Resume {
        instrument: InstrumentId,
    },
    /// Advances time without doing anything else, so GTD orders expire when no other command
    /// arrives. It produces no outcome event, only the expirations it causes.
    Heartbeat,
    /// Cuts a snapshot: the threaded pipeline hands its consumer the engine's state as of this
    /// command, so the cut has a place in the journal like any command. Like a heartbeat it
    /// advances time (GTD expiry) and produces no outcome event.
    Snapshot,
    /// Admin: replace an account's limits (`None`: none of its own, so the default set applies).
    /// Account 0 sets the default set, used by every account without limits of its own.
    /// Orders already live are kept even if they break the new limits.
    SetLimits {
        account: AccountId,
        limits: Option<Box<Limits>>,
    },
    /// Admin kill switch: cancel every live order of the account (resting and armed stops, on
    /// every instrument) and refuse its places and amends until `EnableAccount`.
    DisableAccount {
        account: AccountId,
    },
    /// Admin: let a disabled account trade again.
    EnableAccount {
        account: AccountId,
    },
}

/// Names a live order: by engine id, or by the account's client order id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderRef {
    Id(OrderId),
    Client(ClientOrderId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    pub account: AccountId,
    /// Session for cancel-on-disconnect; `0` leaves the order untagged.
    pub session: SessionId,
    /// `0` for none; otherwise unique among the account's live orders.
    pub client_id: ClientOrderId,
    pub instrument: InstrumentId,
    pub side: Side,
    pub order_type: OrderType,
    /// Limit price (limit and stop-limit orders); ignored otherwise.
    pub price: Ticks,
    /// Trigger price (stop orders); ignored otherwise.
    pub trigger: Ticks,
    pub size: Lots,
    pub tif: TimeInForce,
    /// Expiry for [`TimeInForce::Gtd`], compared with command timestamps.
    pub expiry: Timestamp,
    /// Reject instead of taking liquidity.
    pub post_only: bool,
    /// Iceberg: show at most this many lots at a time; `0` shows the whole size.
    pub display: Lots,
    pub stp: SelfTradePrevention,
}

impl Place {
    /// A GTC limit order with every option at its default.
    pub fn limit(
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        price: Ticks,
        size: Lots,
    ) -> Self {
        Place {
            account,
            session: 0,
            client_id: 0,
            instrument,
            side,
            order_type: OrderType::Limit,
            price,
            trigger: 0,
            size,
            tif: TimeInForce::Gtc,
            expiry: 0,
            post_only: false,
            display: 0,
            stp: SelfTradePrevention::CancelTaker,
        }
    }

    /// A market order (IOC up to the price band).
    pub fn market(account: AccountId, instrument: InstrumentId, side: Side, size: Lots) -> Self {
        Place {
            order_type: OrderType::Market,
            tif: TimeInForce::Ioc,
            ..Place::limit(account, instrument, side, 0, size)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    pub account: AccountId,
    pub order: OrderRef,
}

/// Changes a live order. A pure size decrease keeps time priority; a price change or a size
/// increase re-queues the order (and may match, as a new order would).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amend {
    pub account: AccountId,
    pub order: OrderRef,
    /// New limit price; `None` keeps it.
    pub price: Option<Ticks>,
    /// New open (remaining) size; `None` keeps it.
    pub size: Option<Lots>,
    /// New trigger price of an untriggered stop; `None` keeps it.
    pub trigger: Option<Ticks>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MassCancel {
    pub account: AccountId,
    pub instrument: Option<InstrumentId>,
    pub side: Option<Side>,
}

impl CommandKind {
    /// The account a command acts for (`0` for admin commands and heartbeats).
    pub fn account(&self) -> AccountId {
        match self {
            CommandKind::Place(p) => p.account,
            CommandKind::Cancel(c) => c.account,
            CommandKind::Amend(a) => a.account,
            CommandKind::MassCancel(m) => m.account,
            _ => 0,
        }
    }

    pub fn tag(&self) -> CommandTag {
        match self {
            CommandKind::Place(_) => CommandTag::Place,
            CommandKind::Cancel(_) => CommandTag::Cancel,
            CommandKind::Amend(_) => CommandTag::Amend,
            CommandKind::MassCancel(_) => CommandTag::MassCancel,
            CommandKind::SessionClosed { .. } => CommandTag::SessionClosed,
            CommandKind::AddInstrument(_) => CommandTag::AddInstrument,
            CommandKind::Halt { .. } => CommandTag::Halt,
            CommandKind::Resume { .. } => CommandTag::Resume,
            CommandKind::Heartbeat => CommandTag::Heartbeat,
            CommandKind::Snapshot => CommandTag::Snapshot,
            CommandKind::SetLimits { .. } => CommandTag::SetLimits,
            CommandKind::DisableAccount { .. } => CommandTag::DisableAccount,
            CommandKind::EnableAccount { .. } => CommandTag::EnableAccount,
        }
    }
}

/// Which kind of command an outcome event answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum CommandTag {
    Place = 0,
    Cancel = 1,
    Amend = 2,
    MassCancel = 3,
    SessionClosed = 4,
    AddInstrument = 5,
    Halt = 6,
    Resume = 7,
    Heartbeat = 8,
    Snapshot = 9,
    SetLimits = 10,
    DisableAccount = 11,
    EnableAccount = 12,
}

impl CommandTag {
    /// Commands that only advance time: no outcome event, and never past a deadline.
    pub fn is_time_only(self) -> bool {
        matches!(self, CommandTag::Heartbeat | CommandTag::Snapshot)
    }
}
