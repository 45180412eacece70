"""The tickerd gRPC front from Python's grpc.aio, with stubs generated from proto/ at test time.

run.sh starts the server (examples/grpc_server, no simulator, tokens alice-token -> account 1
and bob-token -> account 2), generates the stubs and sets TICKER_GRPC_ADDR.
"""

import asyncio
import os

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ticker.v1 import common_pb2, market_data_pb2, market_data_pb2_grpc, orders_pb2, orders_pb2_grpc

ADDR = os.environ["TICKER_GRPC_ADDR"]
ALICE = (("authorization", "Bearer alice-token"),)
BOB = (("authorization", "Bearer bob-token"),)
# Every wait is bounded: a missing message fails the test instead of hanging it.
TIMEOUT = 20


def limit(instrument, side, price, size):
    return orders_pb2.PlaceOrderRequest(
        instrument=instrument, side=side, order_type=common_pb2.ORDER_TYPE_LIMIT, price=price, size=size
    )


async def next_message(call):
    return await asyncio.wait_for(call.read(), TIMEOUT)


async def next_update(call):
    """The next order update that is not a snapshot."""
    while True:
        update = await next_message(call)
        if update.WhichOneof("event") != "snapshot":
            return update


def run(coroutine):
    asyncio.run(coroutine)


def test_place_order_and_stream_its_updates():
    async def body():
        async with grpc.aio.insecure_channel(ADDR) as channel:
            orders = orders_pb2_grpc.OrderServiceStub(channel)
            updates = orders.SubscribeOrderUpdates(orders_pb2.SubscribeOrderUpdatesRequest(), metadata=ALICE)
            snapshot = await next_message(updates)
            assert snapshot.WhichOneof("event") == "snapshot"
            assert snapshot.delivery == common_pb2.DELIVERY_SNAPSHOT

            placed = await orders.PlaceOrder(
                limit("ETH-USD", common_pb2.SIDE_SELL, "3300.00", "1.5"), metadata=ALICE, timeout=TIMEOUT
            )
            assert placed.result.accepted
            assert placed.order.status == orders_pb2.ORDER_STATUS_RESTING
            assert placed.order.price == "3300.00"
            assert placed.order.visible_size == "1.5000"

            accepted = await next_update(updates)
            rested = await next_update(updates)
            assert accepted.accepted.order.order_id == placed.order.order_id
            assert accepted.accepted.order.size == "1.5000"
            assert rested.rested.price == "3300.00"
            assert rested.prev_seq == accepted.seq == rested.seq - 1

            cancelled = await orders.CancelOrder(
                orders_pb2.CancelOrderRequest(order_id=placed.order.order_id), metadata=ALICE, timeout=TIMEOUT
            )
            assert cancelled.result.accepted
            assert cancelled.order.done_reason == common_pb2.DONE_REASON_CANCELLED
            updates.cancel()

    run(body())


def test_market_data_streams_depth_and_trades():
    async def body():
        async with grpc.aio.insecure_channel(ADDR) as channel:
            orders = orders_pb2_grpc.OrderServiceStub(channel)
            market_data = market_data_pb2_grpc.MarketDataServiceStub(channel)
            stream = market_data.Subscribe(
                market_data_pb2.SubscribeRequest(
                    instruments=["BTC-USD"],
                    channels=[market_data_pb2.CHANNEL_DEPTH, market_data_pb2.CHANNEL_TRADES],
                )
            )
            snapshot = await next_message(stream)
            assert snapshot.delivery == common_pb2.DELIVERY_SNAPSHOT
            assert snapshot.depth.snapshot

            await orders.PlaceOrder(limit("BTC-USD", common_pb2.SIDE_SELL, "65010.00", "0.3"), metadata=ALICE)
            await orders.PlaceOrder(limit("BTC-USD", common_pb2.SIDE_BUY, "65010.00", "0.1"), metadata=BOB)
            trade = None
            while trade is None:
                message = await next_message(stream)
                assert message.instrument == "BTC-USD"
                if message.WhichOneof("payload") == "trade":
                    trade = message
            assert trade.trade.price == "65010.00"
            assert trade.trade.size == "0.10000"
            assert trade.trade.side == common_pb2.SIDE_BUY
            assert trade.seq > trade.prev_seq
            stream.cancel()

            instruments = await market_data.ListInstruments(market_data_pb2.ListInstrumentsRequest())
            btc = next(i for i in instruments.instruments if i.symbol == "BTC-USD")
            assert (btc.tick_size, btc.lot_size) == ("0.01", "0.00001")

    run(body())


def test_bad_requests_fail_with_the_right_codes():
    async def body():
        async with grpc.aio.insecure_channel(ADDR) as channel:
            orders = orders_pb2_grpc.OrderServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as no_token:
                await orders.PlaceOrder(limit("BTC-USD", common_pb2.SIDE_BUY, "65000.00", "1"))
            assert no_token.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as off_tick:
                await orders.PlaceOrder(limit("BTC-USD", common_pb2.SIDE_BUY, "65000.001", "1"), metadata=ALICE)
            assert off_tick.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "price" in off_tick.value.details()
            far = await orders.PlaceOrder(limit("BTC-USD", common_pb2.SIDE_BUY, "1.00", "1"), metadata=ALICE)
            assert not far.result.accepted
            assert far.result.reject_reason == common_pb2.REJECT_REASON_OUTSIDE_BAND

    run(body())


def test_reflection_v1alpha_lists_the_services():
    async def body():
        async with grpc.aio.insecure_channel(ADDR) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = stub.ServerReflectionInfo()
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            response = await asyncio.wait_for(call.read(), TIMEOUT)
            await call.done_writing()
            names = {s.name for s in response.list_services_response.service}
            assert {"ticker.v1.OrderService", "ticker.v1.MarketDataService", "grpc.health.v1.Health"} <= names

    run(body())
