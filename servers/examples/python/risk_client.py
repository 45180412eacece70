"""A risk desk's client of tickerd's RiskService, with Python's grpc.aio.

It follows the drop copy (every account's order updates in one gap-free sequence), resuming
after a dropped connection from the last `seq` it saw, and reads positions; `kill` and `enable`
are the kill switch. Run against a tickerd (or the grpc_server example) with a `risk` token:

    python -m grpc_tools.protoc -I proto --python_out=gen --grpc_python_out=gen proto/ticker/v1/*.proto
    PYTHONPATH=gen python servers/examples/python/risk_client.py --addr 127.0.0.1:50051 --token risk-desk

It prints one line per update: the drop copy's seq, the account, and what happened.
"""

import argparse
import asyncio

import grpc

from ticker.v1 import common_pb2, risk_pb2, risk_pb2_grpc


class GapError(Exception):
    """The stream skipped a sequence number: never expected from tickerd, so say it loudly."""


class RiskClient:
    def __init__(self, channel, token):
        self.stub = risk_pb2_grpc.RiskServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),)
        # The last drop-copy seq received: where a reconnection resumes.
        self.last_seq = None

    async def drop_copy(self, accounts=()):
        """Yields drop-copy updates forever, resuming after `last_seq` when called again.

        The first update of a fresh stream (or of a resume older than the server's history)
        is a snapshot of the open orders; after it, every update's `prev_seq` is the previous
        one's `seq` (checked here when the stream is not filtered to some accounts).
        """
        request = risk_pb2.StreamDropCopyRequest(accounts=list(accounts))
        if self.last_seq is not None:
            request.from_seq = self.last_seq
        async for update in self.stub.StreamDropCopy(request, metadata=self.metadata):
            snapshot = update.WhichOneof("event") == "snapshot"
            if not accounts and not snapshot and self.last_seq is not None and update.prev_seq != self.last_seq:
                raise GapError(f"expected prev_seq {self.last_seq}, got {update.prev_seq}")
            self.last_seq = update.seq
            yield update

    async def positions(self, account=0):
        """Positions of one account, or of all when `account` is 0."""
        reply = await self.stub.GetPositions(risk_pb2.GetPositionsRequest(account=account), metadata=self.metadata)
        return list(reply.positions)

    async def kill(self, account):
        """Disables the account and cancels its orders; returns the ids cancelled."""
        reply = await self.stub.DisableAccount(risk_pb2.AccountRequest(account=account), metadata=self.metadata)
        if not reply.result.accepted:
            raise RuntimeError(f"kill switch refused: {common_pb2.RejectReason.Name(reply.result.reject_reason)}")
        return list(reply.cancelled_order_ids)

    async def enable(self, account):
        reply = await self.stub.EnableAccount(risk_pb2.AccountRequest(account=account), metadata=self.metadata)
        return reply.result.accepted


def describe(update):
    """One line for an order update of the drop copy."""
    event = update.WhichOneof("event")
    detail = ""
    if event == "snapshot":
        detail = f"{len(update.snapshot.orders)} open orders"
    elif event == "fill":
        detail = f"order {update.fill.order_id} filled {update.fill.size} @ {update.fill.price}"
    elif event == "accepted":
        o = update.accepted.order
        detail = f"order {o.order_id} {o.instrument} {common_pb2.Side.Name(o.side)} {o.size} @ {o.price}"
    elif event == "done":
        detail = f"order {update.done.order_id} {common_pb2.DoneReason.Name(update.done.reason)}"
    return f"seq={update.seq} account={update.account} {event} {detail}".rstrip()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:50051")
    parser.add_argument("--token", required=True, help="a token with the risk role")
    parser.add_argument("--accounts", default="", help="comma-separated accounts (default: all)")
    args = parser.parse_args()
    accounts = [int(a) for a in args.accounts.split(",") if a]
    async with grpc.aio.insecure_channel(args.addr) as channel:
        client = RiskClient(channel, args.token)
        for p in await client.positions():
            print(f"position account={p.account} {p.instrument} net={p.net} realized={p.realized_pnl}")
        while True:
            try:
                async for update in client.drop_copy(accounts):
                    print(describe(update), flush=True)
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                print(f"connection lost ({e.details()}); resuming after seq {client.last_seq}", flush=True)
                await asyncio.sleep(1)


if __name__ == "__main__":
    asyncio.run(main())
