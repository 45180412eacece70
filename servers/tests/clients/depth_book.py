"""A client's copy of one instrument's depth, kept from `snapshot` and `update` messages and
checked against each message's CRC-32 checksum exactly as docs/feeds.md specifies it.

Prices and sizes stay the wire's decimal strings (the checksum is computed from them); Decimal
is only used to order and to recognise a zero size, never a float.
"""

import zlib
from decimal import Decimal

CHECKSUM_LEVELS = 10


class SequenceError(AssertionError):
    pass


class DepthBook:
    def __init__(self):
        self.bids = {}  # Decimal price -> (price string, size string)
        self.asks = {}
        self.last_seq = None

    def apply(self, message: dict) -> None:
        """Applies a depth `snapshot` or `update`, checking sequence and then the checksum."""
        if message["type"] == "snapshot":
            self.bids = {}
            self.asks = {}
        elif message["type"] == "update":
            if self.last_seq is None:
                raise SequenceError(f"depth update before any snapshot: {message}")
            if message["prev_seq"] != self.last_seq:
                raise SequenceError(
                    f"depth update prev_seq {message['prev_seq']} != last seq {self.last_seq}"
                )
        else:
            raise ValueError(f"not a depth message: {message}")
        for side, levels in (("bids", message["bids"]), ("asks", message["asks"])):
            book = getattr(self, side)
            for price, size in levels:
                assert isinstance(price, str) and isinstance(size, str), (price, size)
                key = Decimal(price)
                if Decimal(size) == 0:
                    book.pop(key, None)
                else:
                    book[key] = (price, size)
        self.last_seq = message["seq"]
        expected = self.checksum()
        if expected != message["checksum"]:
            raise AssertionError(
                f"depth checksum {message['checksum']} != {expected} computed from the book "
                f"after seq {message['seq']}"
            )

    def best_bid(self):
        return max(self.bids) if self.bids else None

    def best_ask(self):
        return min(self.asks) if self.asks else None

    def checksum(self) -> int:
        asks = [self.asks[p] for p in sorted(self.asks)[:CHECKSUM_LEVELS]]
        bids = [self.bids[p] for p in sorted(self.bids, reverse=True)[:CHECKSUM_LEVELS]]
        text = "".join(_digits(price) + _digits(size) for price, size in asks + bids)
        return zlib.crc32(text.encode("ascii"))


def _digits(decimal: str) -> str:
    return decimal.replace(".", "").lstrip("0")

