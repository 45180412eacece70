//! `ticker.v1.RiskService`: the firm-wide view for `risk` tokens — the drop copy of every
//! account's order updates, positions, limits — and the kill switch; `SetLimits` for `admin`.
//!
//! The drop copy and the positions stream forward the feeds' pre-encoded messages as they are
//! ([`super::frames`]); a stream filtered to some accounts decodes each message, keeps that
//! account's (and trims snapshots to them) and encodes it again for its subscriber alone.
//! Limits and the kill switch are engine commands through the ingress ring.

use super::auth::Auth;
use super::convert::{Refusal, Violations};
use super::frames::{self, Out, OutStream};
use super::report;
use crate::auth::Role;
use crate::limits::LimitsSpec;
use crate::market::Market;
use std::collections::HashSet;
use std::sync::Arc;
use ticker_engine::{AccountId, CommandKind, Event};
use ticker_proto::v1 as pb;
use ticker_proto::v1::risk_service_server::RiskService;
use tonic::{Code, Request, Response, Status};

pub struct RiskApi {
    market: Arc<Market>,
    auth: Auth,
}

impl RiskApi {
    pub fn new(market: Arc<Market>, auth: Auth) -> Self {
        RiskApi { market, auth }
    }

    /// `StreamDropCopy`, as pre-encoded frames.
    pub async fn drop_copy(
        self: Arc<Self>,
        req: Request<pb::StreamDropCopyRequest>,
    ) -> Result<Response<OutStream>, Status> {
        self.auth.require(req.metadata(), Role::Risk)?;
        let r = req.into_inner();
        let sub = self.market.accounts().drop_copy().subscribe(r.from_seq);
        // The drop copy always has a snapshot, so the hub never reports a gap on it.
        let gap = |_, _| Out::encoded(&pb::OrderUpdate::default());
        if r.accounts.is_empty() {
            let stream = frames::subscription_stream(sub, "the drop copy".into(), gap);
            return Ok(Response::new(Box::pin(stream)));
        }
        let accounts: HashSet<AccountId> = r.accounts.into_iter().collect();
        let what = format!("the drop copy of {} accounts", accounts.len());
        let stream =
            frames::filtered_stream(sub, what, gap, move |u: &mut pb::OrderUpdate| match &mut u
                .event
            {
                Some(pb::order_update::Event::Snapshot(s)) => {
                    s.orders.retain(|o| accounts.contains(&o.account));
                    true
                }
                _ => accounts.contains(&u.account),
            });
        Ok(Response::new(Box::pin(stream)))
    }

    /// `StreamPositions`, as pre-encoded frames.
    pub async fn positions(
        self: Arc<Self>,
        req: Request<pb::StreamPositionsRequest>,
    ) -> Result<Response<OutStream>, Status> {
        self.auth.require(req.metadata(), Role::Risk)?;
        let r = req.into_inner();
        let sub = self.market.positions().subscribe(r.from_seq);
        let gap = |_, _| Out::encoded(&pb::PositionUpdate::default());
        if r.accounts.is_empty() {
            let stream = frames::subscription_stream(sub, "the positions".into(), gap);
            return Ok(Response::new(Box::pin(stream)));
        }
        let accounts: HashSet<AccountId> = r.accounts.into_iter().collect();
        let what = format!("the positions of {} accounts", accounts.len());
        let stream =
            frames::filtered_stream(
                sub,
                what,
                gap,
                move |u: &mut pb::PositionUpdate| match &mut u.event {
                    Some(pb::position_update::Event::Snapshot(s)) => {
                        s.positions.retain(|p| accounts.contains(&p.account));
                        true
                    }
                    Some(pb::position_update::Event::Position(p)) => accounts.contains(&p.account),
                    None => false,
                },
            );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn execute(&self, kind: CommandKind) -> Result<(pb::CommandResult, Vec<Event>), Status> {
        let events = self.market.execute(kind).await.map_err(Refusal::from)?;
        Ok((report::decision(&events)?, events))
    }

    async fn switch(
        &self,
        req: Request<pb::AccountRequest>,
        disable: bool,
    ) -> Result<Response<pb::AccountStatusResponse>, Status> {
        self.auth.require(req.metadata(), Role::Risk)?;
        let account = req.get_ref().account;
        if account == 0 {
            return Err(field_error("account", "required: a non-zero account"));
        }
        let kind = if disable {
            CommandKind::DisableAccount { account }
        } else {
            CommandKind::EnableAccount { account }
        };
        let (result, events) = self.execute(kind).await?;
        if result.accepted {
            self.market
                .limits()
                .set_disabled(result.engine_seq, account, disable);
        }
        Ok(Response::new(pb::AccountStatusResponse {
            result: Some(result),
            cancelled_order_ids: report::cancelled_by_kill_switch(&events),
        }))
    }
}

fn field_error(field: &str, description: &str) -> Status {
    Refusal {
        code: Code::InvalidArgument,
        message: format!("invalid request: bad {field}"),
        violations: vec![(field.into(), description.into())],
    }
    .into()
}

#[derive(Clone)]
pub struct RiskRpc(pub Arc<RiskApi>);

#[tonic::async_trait]
impl RiskService for RiskRpc {
    type StreamDropCopyStream = frames::TypedStream<pb::OrderUpdate>;
    type StreamPositionsStream = frames::TypedStream<pb::PositionUpdate>;

    async fn stream_drop_copy(
        &self,
        req: Request<pb::StreamDropCopyRequest>,
    ) -> Result<Response<Self::StreamDropCopyStream>, Status> {
        let stream = self.0.clone().drop_copy(req).await?.into_inner();
        Ok(Response::new(frames::typed(stream)))
    }

    async fn get_positions(
        &self,
        req: Request<pb::GetPositionsRequest>,
    ) -> Result<Response<pb::Positions>, Status> {
        self.0.auth.require(req.metadata(), Role::Risk)?;
        let positions = self.0.market.positions();
        let positions = match req.get_ref().account {
            0 => positions.all_proto(),
            account => positions.account_proto(account),
        };
        Ok(Response::new(pb::Positions { positions }))
    }

    async fn stream_positions(
        &self,
        req: Request<pb::StreamPositionsRequest>,
    ) -> Result<Response<Self::StreamPositionsStream>, Status> {
        let stream = self.0.clone().positions(req).await?.into_inner();
        Ok(Response::new(frames::typed(stream)))
    }

    async fn get_limits(
        &self,
        req: Request<pb::GetLimitsRequest>,
    ) -> Result<Response<pb::GetLimitsResponse>, Status> {
        self.0.auth.require(req.metadata(), Role::Risk)?;
        let view = self
            .0
            .market
            .get_limits(req.get_ref().account)
            .await
            .map_err(Refusal::from)?;
        let instruments = self.0.market.instruments();
        let wire = |l: &ticker_engine::Limits| LimitsSpec::from_engine(l, instruments).to_proto();
        Ok(Response::new(pb::GetLimitsResponse {
            limits: view.own.as_ref().map(wire),
            default_limits: view.default.as_ref().map(wire),
            disabled: view.disabled,
        }))
    }

    async fn set_limits(
        &self,
        req: Request<pb::SetLimitsRequest>,
    ) -> Result<Response<pb::SetLimitsResponse>, Status> {
        self.0.auth.require(req.metadata(), Role::Admin)?;
        let r = req.get_ref();
        let mut v = Violations::default();
        let limits = match &r.limits {
            None => None,
            Some(l) => {
                LimitsSpec::from_proto(l).to_engine(self.0.market.instruments(), "limits", &mut v)
            }
        };
        v.finish(|| ()).map_err(Refusal::from)?;
        let (result, _) = self
            .0
            .execute(CommandKind::SetLimits {
                account: r.account,
                limits: limits.clone().map(Box::new),
            })
            .await?;
        if result.accepted {
            self.0
                .market
                .limits()
                .set(result.engine_seq, r.account, limits);
        }
        Ok(Response::new(pb::SetLimitsResponse {
            result: Some(result),
        }))
    }

    async fn disable_account(
        &self,
        req: Request<pb::AccountRequest>,
    ) -> Result<Response<pb::AccountStatusResponse>, Status> {
        self.0.switch(req, true).await
    }

    async fn enable_account(
        &self,
        req: Request<pb::AccountRequest>,
    ) -> Result<Response<pb::AccountStatusResponse>, Status> {
        self.0.switch(req, false).await
    }
}
