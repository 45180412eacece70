//! The instruments the feeds know, with their wire scales. Filled from the engine's
//! `InstrumentAdded` events, read by the fronts to resolve symbols.

use crate::wire::Scale;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use ticker_engine::{Instrument, InstrumentId, InstrumentSpec, SpecError};

/// An instrument and how its ticks and lots are written on the wire.
#[derive(Debug, Clone)]
pub struct WireInstrument {
    pub instrument: Instrument,
    pub price: Scale,
    pub size: Scale,
    /// Price × size sums (notionals, cost basis, P&L): units of tick size × lot size.
    pub notional: Scale,
}

impl WireInstrument {
    pub fn new(id: InstrumentId, spec: InstrumentSpec) -> Result<Self, SpecError> {
        let instrument = Instrument::new(id, spec)?;
        let price = Scale::new(instrument.spec.tick_size);
        let size = Scale::new(instrument.spec.lot_size);
        Ok(WireInstrument {
            price,
            size,
            notional: price.product(size),
            instrument,
        })
    }

    pub fn id(&self) -> InstrumentId {
        self.instrument.id
    }

    pub fn symbol(&self) -> &str {
        &self.instrument.spec.symbol
    }
}

#[derive(Default)]
pub struct Instruments {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: Vec<Option<Arc<WireInstrument>>>,
    by_symbol: HashMap<String, Arc<WireInstrument>>,
}

impl Instruments {
    pub fn insert(&self, wire: WireInstrument) -> Arc<WireInstrument> {
        let wire = Arc::new(wire);
        let mut inner = self.inner.write();
        let id = wire.id() as usize;
        if inner.by_id.len() <= id {
            inner.by_id.resize(id + 1, None);
        }
        inner.by_id[id] = Some(wire.clone());
        inner
            .by_symbol
            .insert(wire.symbol().to_string(), wire.clone());
        wire
    }

    pub fn get(&self, id: InstrumentId) -> Option<Arc<WireInstrument>> {
        self.inner.read().by_id.get(id as usize).cloned().flatten()
    }

    pub fn by_symbol(&self, symbol: &str) -> Option<Arc<WireInstrument>> {
        self.inner.read().by_symbol.get(symbol).cloned()
    }

    pub fn all(&self) -> Vec<Arc<WireInstrument>> {
        self.inner.read().by_id.iter().flatten().cloned().collect()
    }
}
