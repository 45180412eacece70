//! The router: engine events to order updates on each account's topic and on the drop copy,
//! with the account's open orders kept in step.

use super::update::OrderChange;
use super::{AccountStream, Accounts, OpenOrder, OrderUpdate, ARMED, NEW, RESTING, TRIGGERED};
use crate::hub::{Message, MessageKind};
use crate::id_hash::IdMap;
use crate::instruments::WireInstrument;
use std::collections::BTreeMap;
use std::sync::Arc;
use ticker_engine::*;

/// Routes engine events to per-account order-update topics.
pub struct OrderRouter {
    accounts: Arc<Accounts>,
    /// The router's own handles, so routing an event takes no shared lock.
    cache: IdMap<AccountId, Arc<AccountStream>>,
    /// Instruments by id, copied from the shared registry on first use for the same reason.
    wires: Vec<Option<Arc<WireInstrument>>>,
}

impl OrderRouter {
    pub fn new(accounts: Arc<Accounts>) -> Self {
        OrderRouter {
            accounts,
            cache: IdMap::default(),
            wires: Vec::new(),
        }
    }

    fn wire(&mut self, instrument: InstrumentId) -> Option<Arc<WireInstrument>> {
        let idx = instrument as usize;
        if let Some(Some(w)) = self.wires.get(idx) {
            return Some(w.clone());
        }
        let wire = self.accounts.instruments.get(instrument)?;
        if self.wires.len() <= idx {
            self.wires.resize(idx + 1, None);
        }
        self.wires[idx] = Some(wire.clone());
        Some(wire)
    }

    /// Publishes one update to `account` and to the drop copy; `update` changes the
    /// open-order state under the same locks (the drop copy's, then the account's: the order
    /// the drop copy's snapshot takes them in).
    fn publish(
        &mut self,
        account: AccountId,
        event: &Event,
        update: impl FnOnce(&mut BTreeMap<OrderId, OpenOrder>),
        change: OrderChange,
    ) {
        let accounts = &self.accounts;
        let stream = self
            .cache
            .entry(account)
            .or_insert_with(|| accounts.stream(account));
        let drop_copy = accounts.drop_copy.lock();
        let mut st = stream.state.lock();
        update(&mut st.open);
        st.seq += 1;
        let seq = st.seq;
        stream.topic.publish(Message::lazy(
            seq,
            seq - 1,
            MessageKind::Update,
            OrderUpdate {
                engine_seq: event.seq,
                ts: event.ts,
                account: None,
                change: change.clone(),
            },
        ));
        drop(st);
        drop_copy.publish(OrderUpdate {
            engine_seq: event.seq,
            ts: event.ts,
            account: Some(account),
            change,
        });
    }

    pub fn apply(&mut self, e: &Event) {
        match e.kind {
            EventKind::PlaceAccepted { corr, ref order } => {
                let Some(wire) = self.wire(order.instrument) else {
                    return;
                };
                let open = OpenOrder {
                    info: *order,
                    remaining: order.size,
                    visible: 0,
                    filled: 0,
                    status: NEW,
                };
                self.publish(
                    order.account,
                    e,
                    |m| {
                        m.insert(order.order_id, open);
                    },
                    OrderChange::Accepted {
                        wire,
                        corr,
                        order: *order,
                    },
                );
            }
            EventKind::Accepted {
                corr,
                command,
                account,
                order_id,
                instrument,
            } if account != 0 => {
                let wire = instrument.and_then(|i| self.wire(i));
                let change = OrderChange::Ack {
                    corr,
                    command,
                    order_id,
                    wire,
                };
                self.publish(account, e, |_| {}, change);
            }
            EventKind::Rejected {
                corr,
                command,
                account,
                client_id,
                order_id,
                reason,
            } if account != 0 => {
                let change = OrderChange::Rejected {
                    corr,
                    command,
                    client_id,
                    order_id,
                    reason,
                };
                self.publish(account, e, |_| {}, change);
            }
            EventKind::OrderRested {
                order_id,
                account,
                instrument,
                price,
                visible,
                remaining,
                ..
            } => {
                let Some(wire) = self.wire(instrument) else {
                    return;
                };
                self.publish(
                    account,
                    e,
                    |m| {
                        if let Some(o) = m.get_mut(&order_id) {
                            o.status = RESTING;
                            o.visible = visible;
                            o.remaining = remaining;
                            o.info.price = price;
                        }
                    },
                    OrderChange::Rested {
                        wire,
                        order_id,
                        price,
                        visible,
                        remaining,
                    },
                );
            }
            EventKind::StopArmed {
                order_id,
                account,
                instrument,
                trigger,
                ..
            }
            | EventKind::StopTriggered {
                order_id,
                account,
                instrument,
                trigger,
                ..
            } => {
                let Some(wire) = self.wire(instrument) else {
                    return;
                };
                let last_price = match e.kind {
                    EventKind::StopTriggered { last_price, .. } => Some(last_price),
                    _ => None,
                };
                let status = if last_price.is_none() {
                    ARMED
                } else {
                    TRIGGERED
                };
                self.publish(
                    account,
                    e,
                    |m| {
                        if let Some(o) = m.get_mut(&order_id) {
                            o.status = status;
                        }
                    },
                    OrderChange::Stop {
                        wire,
                        order_id,
                        trigger,
                        last_price,
                    },
                );
            }
            EventKind::Trade {
                trade_id,
                instrument,
                price,
                size,
                taker_order,
                taker_account,
                maker_order,
                maker_account,
                taker_remaining,
                maker_remaining,
                ..
            } => {
                let Some(wire) = self.wire(instrument) else {
                    return;
                };
                for (account, order_id, remaining, maker) in [
                    (taker_account, taker_order, taker_remaining, false),
                    (maker_account, maker_order, maker_remaining, true),
                ] {
                    self.publish(
                        account,
                        e,
                        |m| {
                            if let Some(o) = m.get_mut(&order_id) {
                                o.filled += size;
                                o.remaining = remaining;
                                o.visible = o.visible.saturating_sub(size);
                            }
                        },
                        OrderChange::Fill {
                            wire: wire.clone(),
                            order_id,
                            trade_id,
                            price,
                            size,
                            remaining,
                            maker,
                        },
                    );
                }
            }
            EventKind::OrderAmended {
                order_id,
                account,
                instrument,
                price,
                trigger,
                remaining,
                visible,
                priority_kept,
                ..
            } => {
                let Some(wire) = self.wire(instrument) else {
                    return;
                };
                self.publish(
                    account,
                    e,
                    |m| {
                        if let Some(o) = m.get_mut(&order_id) {
                            o.info.price = price;
                            o.info.trigger = trigger;
                            o.remaining = remaining;
                            o.visible = visible;
                        }
                    },
                    OrderChange::Amended {
                        wire,
                        order_id,
                        price,
                        trigger,
                        remaining,
                        visible,
                        priority_kept,
                    },
                );
            }
            EventKind::OrderDone {
                order_id,
                account,
                instrument,
                filled,
                cancelled,
                reason,
                ..
            } => {
                let Some(wire) = self.wire(instrument) else {
                    return;
                };
                self.publish(
                    account,
                    e,
                    |m| {
                        m.remove(&order_id);
                    },
                    OrderChange::Done {
                        wire,
                        order_id,
                        reason,
                        filled,
                        cancelled,
                    },
                );
            }
            _ => {}
        }
    }
}
