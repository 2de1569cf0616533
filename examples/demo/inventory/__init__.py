"""A tiny stock-keeping library.

>>> stock = Stock()
>>> stock.add("apple", 3)
>>> stock.count("apple")
3
"""

from dataclasses import dataclass, field


class OutOfStock(Exception):
    """Raised when taking more of an item than is in stock."""


@dataclass
class Stock:
    items: dict = field(default_factory=dict)

    def add(self, name: str, quantity: int) -> None:
        if quantity <= 0:
            raise ValueError(f"quantity must be positive, got {quantity}")
        self.items[name] = self.items.get(name, 0) + quantity

    def take(self, name: str, quantity: int) -> None:
        have = self.items.get(name, 0)
        if quantity > have:
            raise OutOfStock(f"{name}: wanted {quantity}, have {have}")
        self.items[name] = have - quantity

    def count(self, name: str) -> int:
        return self.items.get(name, 0)

    def total(self) -> int:
        """All units in stock.

        >>> Stock({"a": 1, "b": 2}).total()
        3
        """
        return sum(self.items.values())
