"""
Tests for source slot accounting (pure logic, no reactor).
"""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from streamproxy.slots import SourceSlots


class SlotTests(SynchronousTestCase):
    """
    Slots are counted exactly against each source's limit.
    """

    def test_limits(self):
        """
        A limited source gives out that many slots; an unlisted one is
        unlimited.
        """
        slots = SourceSlots({"a": 2})
        first = slots.acquire("a", "x")
        second = slots.acquire("a", "y")
        self.assertIsNotNone(first)
        self.assertIsNotNone(second)
        self.assertIsNone(slots.acquire("a", "z"))
        self.assertEqual(slots.in_use("a"), 2)
        many = [slots.acquire("b", i) for i in range(50)]
        self.assertNotIn(None, many)
        self.assertEqual(slots.usage(), {"a": (2, 2), "b": (50, None)})

    def test_release_is_idempotent(self):
        """
        Releasing a slot twice gives back one connection, not two.
        """
        slots = SourceSlots({"a": 1})
        slot = slots.acquire("a", "x")
        slot.release()
        slot.release()
        self.assertEqual(slots.in_use("a"), 0)
        again = slots.acquire("a", "y")
        self.assertIsNotNone(again)
        self.assertIsNone(slots.acquire("a", "z"))

    def test_zero_limit(self):
        """
        A limit of 0 turns a source off.
        """
        self.assertIsNone(SourceSlots({"a": 0}).acquire("a", "x"))

    def test_waiters_are_served_in_order(self):
        """
        Starts waiting for a full source are told in arrival order, one per
        freed slot.
        """
        slots = SourceSlots({"a": 1, "b": 1})
        held_a = slots.acquire("a", "x")
        held_b = slots.acquire("b", "y")
        told = []
        first = slots.wait_for_room(["a", "b"])
        first.addCallback(lambda source: told.append(("first", source)))
        second = slots.wait_for_room(["a"])
        second.addCallback(lambda source: told.append(("second", source)))
        self.assertEqual(slots.waiting(), 2)
        held_a.release()
        self.assertEqual(told, [("first", "a")])
        held_b.release()
        self.assertEqual(told, [("first", "a")])
        slots.acquire("a", "first")  # what the first waiter would do
        self.assertEqual(slots.waiting(), 1)

    def test_cancelled_waiter_is_forgotten(self):
        """
        A cancelled wait is removed from the list and never fires.
        """
        slots = SourceSlots({"a": 1})
        held = slots.acquire("a", "x")
        d = slots.wait_for_room(["a"])
        d.addErrback(lambda f: f.trap(defer.CancelledError))
        d.cancel()
        self.assertEqual(slots.waiting(), 0)
        held.release()
        self.assertEqual(slots.in_use("a"), 0)

    def test_shortage_is_announced(self):
        """
        on_shortage learns which sources someone waits for (so idle streams
        can make room).
        """
        slots = SourceSlots({"a": 1})
        slots.acquire("a", "x")
        heard = []
        slots.on_shortage = heard.append
        slots.wait_for_room(["a"])
        self.assertEqual(heard, [frozenset({"a"})])
