//! `ticker.v1.AdminService`: instruments and halts changed at run time by `admin` tokens.
//!
//! Each RPC is checked at the edge (every decimal of a new instrument exactly as the config's
//! `[[instruments]]`, symbols resolved against the feeds' table) and then executed as an engine
//! command through the ingress ring, so the change is sequenced, journaled and replayed.

use super::auth::Auth;
use super::convert::{self, Refusal, Violations};
use super::report;
use crate::auth::Role;
use crate::market::Market;
use crate::order_entry;
use std::sync::Arc;
use ticker_engine::{CommandKind, Instrument, InstrumentSpec, SpecError};
use ticker_proto::v1 as pb;
use ticker_proto::v1::admin_service_server::AdminService;
use tonic::{Code, Request, Response, Status};

pub struct AdminRpc {
    market: Arc<Market>,
    auth: Auth,
}

impl AdminRpc {
    pub fn new(market: Arc<Market>, auth: Auth) -> Self {
        AdminRpc { market, auth }
    }

    async fn halt(
        &self,
        symbol: &str,
        halted: bool,
    ) -> Result<pb::InstrumentStatusResponse, Status> {
        let mut v = Violations::default();
        let found = convert::instrument(self.market.instruments(), "symbol", symbol, &mut v);
        v.finish(|| ()).map_err(Refusal::from)?;
        let Some(instrument) = found else {
            return Err(Status::invalid_argument("unknown instrument"));
        };
        let id = instrument.id();
        let kind = if halted {
            CommandKind::Halt { instrument: id }
        } else {
            CommandKind::Resume { instrument: id }
        };
        let events = self.market.execute(kind).await.map_err(Refusal::from)?;
        Ok(pb::InstrumentStatusResponse {
            result: Some(report::decision(&events)?),
        })
    }
}

/// The spec of a request, every bad field named.
fn spec(req: &pb::AddInstrumentRequest) -> Result<InstrumentSpec, Refusal> {
    let mut v = Violations::default();
    let mut field = |name: &str, text: &str| {
        if text.is_empty() {
            v.add(name, "required: a decimal string");
            return None;
        }
        order_entry::decimal(name, text, &mut v)
    };
    let tick_size = field("tick_size", &req.tick_size);
    let lot_size = field("lot_size", &req.lot_size);
    let min_size = field("min_size", &req.min_size);
    let max_size = field("max_size", &req.max_size);
    let reference_price = field("reference_price", &req.reference_price);
    let band = field("band", &req.band);
    let spec = v
        .finish(|| InstrumentSpec {
            symbol: req.symbol.clone(),
            tick_size: tick_size.unwrap_or_default(),
            lot_size: lot_size.unwrap_or_default(),
            min_size: min_size.unwrap_or_default(),
            max_size: max_size.unwrap_or_default(),
            reference_price: reference_price.unwrap_or_default(),
            band: band.unwrap_or_default(),
        })
        .map_err(Refusal::from)?;
    // The engine checks the same and would only say `invalid_instrument_spec`: checking here
    // names the field.
    if let Err(e) = Instrument::new(0, spec.clone()) {
        let field = match &e {
            SpecError::BadSymbol(_) => "symbol",
            SpecError::NotPositive { field, .. }
            | SpecError::OffGrid { field, .. }
            | SpecError::OutOfRange { field, .. } => field,
            SpecError::MinAboveMax { .. } => "min_size",
            SpecError::BadBand(_) => "band",
        };
        return Err(Refusal {
            code: Code::InvalidArgument,
            message: format!("invalid request: bad {field}"),
            violations: vec![(field.to_string(), e.to_string())],
        });
    }
    Ok(spec)
}

#[tonic::async_trait]
impl AdminService for AdminRpc {
    async fn add_instrument(
        &self,
        req: Request<pb::AddInstrumentRequest>,
    ) -> Result<Response<pb::AddInstrumentResponse>, Status> {
        self.auth.require(req.metadata(), Role::Admin)?;
        let spec = spec(req.get_ref())?;
        let symbol = spec.symbol.clone();
        let events = self
            .market
            .execute(CommandKind::AddInstrument(Box::new(spec)))
            .await
            .map_err(Refusal::from)?;
        let result = report::decision(&events)?;
        // The feeds thread registers the instrument before the reply is routed back.
        let instrument = result
            .accepted
            .then(|| self.market.instruments().by_symbol(&symbol))
            .flatten()
            .map(|w| convert::instrument_info(&w));
        Ok(Response::new(pb::AddInstrumentResponse {
            result: Some(result),
            instrument,
        }))
    }

    async fn halt_instrument(
        &self,
        req: Request<pb::HaltInstrumentRequest>,
    ) -> Result<Response<pb::InstrumentStatusResponse>, Status> {
        self.auth.require(req.metadata(), Role::Admin)?;
        Ok(Response::new(self.halt(&req.get_ref().symbol, true).await?))
    }

    async fn resume_instrument(
        &self,
        req: Request<pb::ResumeInstrumentRequest>,
    ) -> Result<Response<pb::InstrumentStatusResponse>, Status> {
        self.auth.require(req.metadata(), Role::Admin)?;
        Ok(Response::new(
            self.halt(&req.get_ref().symbol, false).await?,
        ))
    }
}
