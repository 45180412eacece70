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

/// Called with the number of instruments after each insert.
type Listener = Box<dyn Fn(usize) + Send + Sync>;

#[derive(Default)]
pub struct Instruments {
    inner: RwLock<Inner>,
    /// The fronts tell their clients when an instrument is added at run time.
    listeners: RwLock<Vec<Listener>>,
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
        let count = inner.by_symbol.len();
        drop(inner);
        for listener in self.listeners.read().iter() {
            listener(count);
        }
        wire
    }

    /// Calls `listener` with the number of instruments after every insert from now on (on the
    /// inserting thread: it must not block).
    pub fn on_insert(&self, listener: impl Fn(usize) + Send + Sync + 'static) {
        self.listeners.write().push(Box::new(listener));
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

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn listeners_hear_every_insert_after_they_register() {
        let spec = |symbol: &str| InstrumentSpec {
            symbol: symbol.into(),
            tick_size: Decimal::new(1, 2),
            lot_size: Decimal::new(1, 3),
            min_size: Decimal::new(1, 3),
            max_size: Decimal::new(100, 0),
            reference_price: Decimal::new(100, 0),
            band: Decimal::new(1, 1),
        };
        let all = Instruments::default();
        all.insert(WireInstrument::new(0, spec("A-USD")).unwrap());
        let heard = Arc::new(AtomicUsize::new(0));
        let h = heard.clone();
        all.on_insert(move |n| h.store(n, Ordering::SeqCst));
        assert_eq!(heard.load(Ordering::SeqCst), 0);
        all.insert(WireInstrument::new(1, spec("B-USD")).unwrap());
        assert_eq!(heard.load(Ordering::SeqCst), 2);
        assert_eq!(all.by_symbol("B-USD").unwrap().id(), 1);
    }
}
