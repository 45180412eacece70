//! Shard engines applied one command at a time in the test's thread, routed as
//! `ShardedIngress` routes, with what each command did named so that sets of different shard
//! counts can be compared: order ids by the place that made them, trade ids left out.

// Each test binary that includes this uses its own part of it.
#![allow(dead_code)]

use crate::streams::{each_order_id, NO_SUCH_ORDER};
use std::collections::{BTreeMap, HashMap, HashSet};
use ticker_engine::shard::{fold, route, Route};
use ticker_engine::*;

/// Shard engines applied one command at a time in this thread, routed as [`ShardedIngress`]
/// routes.
pub struct ShardSet {
    pub engines: Vec<Engine>,
    /// Every event of each shard, in its order.
    pub streams: Vec<Vec<Event>>,
    /// Order id → the correlation id of the place that made it.
    pub names: HashMap<OrderId, Correlation>,
    /// And back.
    ids: HashMap<Correlation, OrderId>,
}

/// What one command did, with order ids named by the place that made them and trade ids left
/// out (they interleave between shards).
#[derive(Debug, PartialEq, Eq)]
pub struct Observed {
    pub reply: Option<EventKind>,
    pub instruments: BTreeMap<InstrumentId, Vec<EventKind>>,
    /// Events of no instrument (`AccountStatus`).
    pub global: Vec<EventKind>,
}

impl ShardSet {
    pub fn new(config: &EngineConfig, count: usize) -> Self {
        let engines = Shard::all(count)
            .unwrap()
            .into_iter()
            .map(|shard| {
                Engine::new(EngineConfig {
                    shard,
                    ..config.clone()
                })
            })
            .collect();
        ShardSet {
            engines,
            streams: vec![Vec::new(); count],
            names: HashMap::new(),
            ids: HashMap::new(),
        }
    }

    pub fn count(&self) -> usize {
        self.engines.len()
    }

    pub fn apply(&mut self, command: &Command) -> Observed {
        let targets: Vec<usize> = match route(self.count(), &command.kind) {
            Route::One(shard) => vec![shard],
            Route::All => (0..self.count()).collect(),
        };
        let mut outcomes = Vec::new();
        let mut caused = Vec::new();
        for shard in targets {
            let events = self.engines[shard].apply_collect(command);
            for e in &events {
                if let EventKind::PlaceAccepted { corr, order } = &e.kind {
                    assert_eq!(
                        Shard::of_order(self.count(), order.order_id),
                        shard,
                        "order id {} names its shard",
                        order.order_id
                    );
                    self.names.insert(order.order_id, *corr);
                    self.ids.insert(*corr, order.order_id);
                }
                match e.kind.outcome_corr() {
                    Some(_) => outcomes.push(e.kind.clone()),
                    None => caused.push(e.kind.clone()),
                }
            }
            self.streams[shard].extend(events);
        }
        let mut observed = Observed {
            reply: fold(&outcomes).map(|o| self.named(&o)),
            instruments: BTreeMap::new(),
            global: Vec::new(),
        };
        for kind in caused {
            let kind = self.named(&kind);
            match kind.instrument() {
                Some(i) => observed.instruments.entry(i).or_default().push(kind),
                None => observed.global.push(kind),
            }
        }
        observed
    }

    /// `kind` with each order id this set assigned replaced by the correlation id of its place,
    /// and no trade id.
    pub fn named(&self, kind: &EventKind) -> EventKind {
        let mut kind = kind.clone();
        each_order_id(&mut kind, |id| {
            if let Some(&corr) = self.names.get(id) {
                *id = OrderId(corr);
            }
        });
        if let EventKind::Trade { trade_id, .. } = &mut kind {
            *trade_id = 0;
        }
        kind
    }

    /// `command` with an order named by the correlation id of its place (`OrderRef::Id` of
    /// that correlation id) given this set's id for it.
    pub fn resolve(&self, command: &Command) -> Command {
        let mut command = command.clone();
        if let CommandKind::Cancel(Cancel { order, .. }) | CommandKind::Amend(Amend { order, .. }) =
            &mut command.kind
        {
            if let OrderRef::Id(name) = order {
                *order = OrderRef::Id(self.id(Some(name.0)));
            }
        }
        command
    }

    /// This set's id for the order the place `corr` made (an unknown one if it made none).
    pub fn id(&self, corr: Option<Correlation>) -> OrderId {
        corr.and_then(|c| self.ids.get(&c).copied())
            .unwrap_or(NO_SUCH_ORDER)
    }

    /// Trade ids are unique across the shards, and each shard's go up.
    pub fn check_trade_ids(&self) {
        let mut seen = HashSet::new();
        for stream in &self.streams {
            let mut last = 0;
            for e in stream {
                if let EventKind::Trade { trade_id, .. } = e.kind {
                    assert!(
                        trade_id > last && seen.insert(trade_id),
                        "trade id {trade_id}"
                    );
                    last = trade_id;
                }
            }
        }
    }
}
