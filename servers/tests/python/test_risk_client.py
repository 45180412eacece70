"""The Python risk-client example (servers/examples/python/risk_client.py) against the example
gRPC server: it follows the drop copy while two traders trade, is cut off and resumes by
sequence with nothing missed, reads positions and pulls the kill switch.

run.sh starts the server with alice-token -> account 1, bob-token -> account 2 and
risk-desk-token with the risk role, and puts the example on PYTHONPATH.
"""

import asyncio
import os

import grpc

from risk_client import RiskClient, describe
from ticker.v1 import common_pb2, orders_pb2, orders_pb2_grpc

ADDR = os.environ["TICKER_GRPC_ADDR"]
ALICE = (("authorization", "Bearer alice-token"),)
BOB = (("authorization", "Bearer bob-token"),)
RISK_TOKEN = "risk-desk-token"
TIMEOUT = 20


def limit(instrument, side, price, size):
    return orders_pb2.PlaceOrderRequest(
        instrument=instrument, side=side, order_type=common_pb2.ORDER_TYPE_LIMIT, price=price, size=size
    )


async def take(stream, until):
    """Updates from `stream` up to and including the first for which `until` is true."""
    got = []

    async def read():
        async for update in stream:
            got.append(update)
            if until(update):
                return

    await asyncio.wait_for(read(), TIMEOUT)
    return got


def test_the_risk_client_follows_resumes_and_kills():
    async def body():
        async with grpc.aio.insecure_channel(ADDR) as channel:
            orders = orders_pb2_grpc.OrderServiceStub(channel)
            risk = RiskClient(channel, RISK_TOKEN)

            stream = risk.drop_copy()
            first = await take(stream, lambda u: True)
            assert first[0].WhichOneof("event") == "snapshot"
            assert "open orders" in describe(first[0])

            sell = await orders.PlaceOrder(
                limit("SOL-USD", common_pb2.SIDE_SELL, "151.000", "4"), metadata=ALICE, timeout=TIMEOUT
            )
            assert sell.result.accepted
            buy = await orders.PlaceOrder(
                limit("SOL-USD", common_pb2.SIDE_BUY, "151.000", "1.5"), metadata=BOB, timeout=TIMEOUT
            )
            assert buy.order.filled_size == "1.50"
            fills = [u for u in await take(stream, lambda u: u.WhichOneof("event") == "fill" and u.account == 1) if u.WhichOneof("event") == "fill"]
            assert {u.account for u in fills} <= {1, 2}
            await stream.aclose()

            # Cut off: trading goes on, and the client resumes after the last seq it saw.
            seen = risk.last_seq
            placed = await orders.PlaceOrder(
                limit("SOL-USD", common_pb2.SIDE_BUY, "140.000", "1"), metadata=BOB, timeout=TIMEOUT
            )
            order_id = placed.order.order_id
            resumed = risk.drop_copy()
            got = await take(resumed, lambda u: u.WhichOneof("event") == "accepted" and u.accepted.order.order_id == order_id)
            assert got[0].prev_seq == seen, "no gap and no duplicate"
            assert all(u.WhichOneof("event") != "snapshot" for u in got)
            await resumed.aclose()

            positions = {(p.account, p.instrument): p for p in await risk.positions()}
            assert positions[(2, "SOL-USD")].net == "1.50"
            assert positions[(1, "SOL-USD")].net == "-1.50"
            assert positions[(1, "SOL-USD")].open_sell == "2.50"

            cancelled = await risk.kill(1)
            assert sell.order.order_id in cancelled
            refused = await orders.PlaceOrder(
                limit("SOL-USD", common_pb2.SIDE_SELL, "152.000", "1"), metadata=ALICE, timeout=TIMEOUT
            )
            assert refused.result.reject_reason == common_pb2.REJECT_REASON_ACCOUNT_DISABLED
            assert await risk.enable(1)

            # A trader's token is refused by the risk service.
            trader = RiskClient(channel, "alice-token")
            try:
                await trader.positions()
                raise AssertionError("a trader read positions")
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.PERMISSION_DENIED

    asyncio.run(body())
