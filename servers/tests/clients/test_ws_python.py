"""The WebSocket front as a Python `websockets` client with compression on sees it.

Each test runs against the example server in every deflate mode run.sh started (the
TICKER_WS_SERVERS variable: `mode=host:port,...`), through a WireTap so that the frames on the
wire show whether permessage-deflate was really used in both directions.
"""

import asyncio
import json
import os
from decimal import ROUND_DOWN, Decimal

import pytest
from websockets.asyncio.client import connect

from depth_book import DepthBook, SequenceError
from wiretap import WireTap

INSTRUMENT = "BTC-USD"
# Long enough for the simulator to move the book many times; every wait is an await on a
# message with this as its deadline, never a sleep.
DEADLINE_SECONDS = 60


def servers():
    spec = os.environ.get("TICKER_WS_SERVERS", "")
    pairs = [item.split("=", 1) for item in spec.split(",") if item]
    if not pairs:
        pytest.fail("TICKER_WS_SERVERS is not set (run servers/tests/clients/run.sh)")
    return pairs


@pytest.fixture(params=servers(), ids=lambda pair: pair[0])
def server(request):
    host, port = request.param[1].rsplit(":", 1)
    return host, int(port)


class Client:
    """One connection: JSON in and out, replies matched to requests by `id`."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 1
        self.feed = []  # market data and order updates received while waiting for replies

    async def recv(self) -> dict:
        raw = await asyncio.wait_for(self.ws.recv(), DEADLINE_SECONDS)
        assert isinstance(raw, str), f"binary message from the server: {raw!r}"
        return json.loads(raw)

    async def request(self, op: str, **fields) -> dict:
        """Sends a command and returns its one reply (or `error`); other messages go to feed."""
        request_id = self.next_id
        self.next_id += 1
        await self.ws.send(json.dumps({"op": op, "id": request_id, **fields}))
        while True:
            message = await self.recv()
            if message.get("id") == request_id:
                return message
            self.feed.append(message)


async def open_client(tap: WireTap):
    ws = await connect(
        f"ws://127.0.0.1:{tap.port}/ws", compression="deflate", max_size=16 * 1024 * 1024
    )
    client = Client(ws)
    hello = await client.recv()
    assert hello["type"] == "hello", hello
    return client


def extensions_header(head: bytes) -> str:
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-extensions":
            return value.strip()
    return ""


def assert_compressed_both_ways(tap: WireTap):
    """On every connection, permessage-deflate was negotiated and every text message either
    side sent started with an RSV1 frame: it was deflated."""
    assert tap.connections
    for number, connection in enumerate(tap.connections):
        negotiated = extensions_header(connection.to_client.head)
        assert negotiated.startswith("permessage-deflate"), (
            f"connection {number}: 101 response has Sec-WebSocket-Extensions {negotiated!r}"
        )
        sent = connection.to_server.message_starts()
        received = connection.to_client.message_starts()
        assert sent and received, f"connection {number}: no messages seen on the wire"
        assert all(f.rsv1 for f in sent), f"connection {number}: uncompressed client messages"
        uncompressed = sum(not f.rsv1 for f in received)
        assert uncompressed == 0, (
            f"connection {number}: {uncompressed} of {len(received)} server messages uncompressed"
        )


def run(scenario):
    asyncio.run(asyncio.wait_for(scenario, 4 * DEADLINE_SECONDS))


def test_depth_checksums_and_trade_and_ticker_sequences_hold_over_a_compressed_stream(server):
    async def scenario():
        async with WireTap(*server) as tap:
            client = await open_client(tap)
            channels = [
                {"name": "depth", "instrument": INSTRUMENT},
                {"name": "trades", "instrument": INSTRUMENT},
                {"name": "ticker", "instrument": INSTRUMENT},
            ]
            await client.ws.send(json.dumps({"op": "subscribe", "id": 1, "channels": channels}))
            subscribed = await client.recv()
            assert subscribed == {"type": "subscribed", "id": 1, "channels": channels}

            book = DepthBook()
            depth_updates = trades = tickers = 0
            last_trade_seq = last_ticker_seq = None
            while depth_updates < 50 or trades < 3 or tickers < 3:
                message = await client.recv()
                assert message["instrument"] == INSTRUMENT, message
                channel = message["channel"]
                if channel == "depth":
                    book.apply(message)
                    depth_updates += message["type"] == "update"
                elif channel == "trades":
                    assert message["type"] == "trade", message
                    assert isinstance(message["price"], str) and Decimal(message["size"]) > 0
                    if last_trade_seq is not None and message["prev_seq"] != last_trade_seq:
                        raise SequenceError(
                            f"trade prev_seq {message['prev_seq']} != last {last_trade_seq}"
                        )
                    last_trade_seq = message["seq"]
                    trades += 1
                elif channel == "ticker":
                    # Ticker may be conflated (prev_seq skips) but never goes backwards.
                    assert message["type"] == "ticker", message
                    if last_ticker_seq is not None:
                        assert message["seq"] > last_ticker_seq, message
                        assert message["prev_seq"] >= last_ticker_seq, message
                    last_ticker_seq = message["seq"]
                    tickers += 1
                else:
                    pytest.fail(f"message of a channel not subscribed: {message}")
            await client.ws.close()
        assert_compressed_both_ways(tap)

    run(scenario())


def test_orders_placed_and_cancelled_over_compressed_commands(server):
    async def scenario():
        async with WireTap(*server) as tap:
            alice = await open_client(tap)
            bob = await open_client(tap)

            before_auth = await alice.request(
                "place", instrument=INSTRUMENT, side="buy", price="1.00", size="1"
            )
            assert before_auth["type"] == "error", before_auth
            assert before_auth["code"] == "not_authenticated", before_auth

            bad_token = await alice.request("auth", token="nobody-token")
            assert (bad_token["type"], bad_token["code"]) == ("error", "auth_failed"), bad_token
            authenticated = await alice.request("auth", token="alice-token")
            assert authenticated == {"type": "authenticated", "id": authenticated["id"], "account": 1}
            assert (await bob.request("auth", token="bob-token"))["account"] == 2

            instruments = await alice.request("instruments")
            spec = next(i for i in instruments["instruments"] if i["symbol"] == INSTRUMENT)
            tick = Decimal(spec["tick_size"])

            # A post-only buy 2% under the best bid rests and stays resting while the test runs
            # (a few ticks under would soon be filled by the simulator's moving market).
            subscribed = await alice.request(
                "subscribe", channels=[{"name": "depth", "instrument": INSTRUMENT}]
            )
            assert subscribed["type"] == "subscribed", subscribed
            book = DepthBook()
            while book.last_seq is None:
                message = await alice.recv()
                if message.get("channel") == "depth":
                    book.apply(message)
            anchor = book.best_bid() or book.best_ask() or Decimal(spec["reference_price"])
            price = str(max(anchor * Decimal("0.98"), Decimal(spec["band_low"])).quantize(
                tick, rounding=ROUND_DOWN
            ))
            await alice.request("unsubscribe", channels=[{"name": "depth", "instrument": INSTRUMENT}])

            placed = await alice.request(
                "place",
                instrument=INSTRUMENT,
                side="buy",
                price=price,
                size=spec["min_size"],
                post_only=True,
                client_order_id=7001,
            )
            assert placed["type"] == "result" and placed["op"] == "place", placed
            assert placed["accepted"] is True, placed
            order = placed["order"]
            assert order["status"] == "resting", order
            assert Decimal(order["price"]) == Decimal(price)
            assert order["client_order_id"] == 7001
            order_id = order["order_id"]
            assert isinstance(order_id, str) and order_id.isdigit(), order_id

            off_grid = await alice.request(
                "place", instrument=INSTRUMENT, side="buy", price=price + "1", size=spec["min_size"]
            )
            assert (off_grid["type"], off_grid["code"]) == ("error", "invalid_request"), off_grid
            assert [f["field"] for f in off_grid["fields"]] == ["price"], off_grid

            not_bobs = await bob.request("cancel", order_id=order_id)
            assert (not_bobs["type"], not_bobs["code"]) == ("error", "permission_denied"), not_bobs

            cancelled = await alice.request("cancel", order_id=order_id)
            assert cancelled["type"] == "result" and cancelled["accepted"] is True, cancelled
            assert cancelled["order"]["status"] == "done", cancelled
            assert cancelled["order"]["done_reason"] == "cancelled", cancelled

            again = await alice.request("cancel", order_id=order_id)
            assert again["type"] == "result", again
            assert (again["accepted"], again["reason"]) == (False, "unknown_order"), again

            await alice.ws.close()
            await bob.ws.close()
        assert_compressed_both_ways(tap)

    run(scenario())


def test_checksum_worked_example_from_feeds_md():
    book = DepthBook()
    snapshot = {
        "type": "snapshot",
        "seq": 1042,
        "prev_seq": 0,
        "bids": [["49999.9", "0.010"], ["49990.0", "2.500"]],
        "asks": [["50000.5", "0.250"], ["50001.0", "1.000"]],
        "checksum": 331038948,
    }
    book.apply(snapshot)
    update = {"type": "update", "seq": 1050, "prev_seq": 1042, "bids": [["49999.9", "0.000"]],
              "asks": [], "checksum": 207938290}
    book.apply(update)
    assert book.best_bid() == Decimal("49990.0")
    with pytest.raises(SequenceError):
        book.apply({**update, "seq": 1060, "prev_seq": 1055})
