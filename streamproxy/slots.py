"""
Counting provider connections.

Each source (provider subscription) allows a limited number of simultaneous
streams.  A :class:`Slot` is taken when a stream for a source starts being
opened (probe included) and given back exactly once when it ends, whatever
the reason.
"""

from collections import Counter

from twisted.internet import defer


class Slot:
    """
    One connection to one source, held by ``holder`` (a description for
    the status page).  ``release`` may be called any number of times; only
    the first gives the connection back.
    """

    def __init__(self, pool, source, holder):
        self.source = source
        self.holder = holder
        self._pool = pool
        self.released = False

    def release(self):
        """
        Give the connection back to the pool (once).
        """
        if not self.released:
            self.released = True
            self._pool._give_back(self)

    def __repr__(self):
        state = "released" if self.released else "held"
        return f"<Slot {self.source!r} {state} by {self.holder}>"


class SourceSlots:
    """
    The connection count of every source against its limit, with a
    first-come first-served waiting list for when sources are full.
    """

    def __init__(self, limits):
        self._limits = dict(limits)
        self._held = Counter()
        self._slots = set()
        self._waiters = []
        self.on_shortage = None

    def limit(self, source):
        """
        The most streams ``source`` may have at once, or None for no limit.
        """
        return self._limits.get(source)

    def in_use(self, source):
        """
        How many slots of ``source`` are held now.
        """
        return self._held[source]

    def has_room(self, source, extra=1):
        """
        Whether ``extra`` more connections to ``source`` fit in its limit.
        """
        limit = self._limits.get(source)
        return limit is None or self._held[source] + extra <= limit

    def acquire(self, source, holder):
        """
        Take a slot of ``source`` for ``holder``, or return None when full.
        """
        if not self.has_room(source):
            return None
        slot = Slot(self, source, holder)
        self._held[source] += 1
        self._slots.add(slot)
        return slot

    def wait_for_room(self, sources):
        """
        A Deferred that fires (with the source) once any of ``sources`` may
        have room.  Cancel it to stop waiting.

        When nobody else is waiting and one of them has room already, it
        fires at once.  ``on_shortage(sources)``, when set, is told that
        someone is waiting, so idle streams can be asked to make room.
        """
        sources = frozenset(sources)
        for source in sources:
            if self.has_room(source) and not self._waiters:
                return defer.succeed(source)

        def cancel(d):
            self._waiters[:] = [w for w in self._waiters if w[1] is not d]

        d = defer.Deferred(cancel)
        self._waiters.append((sources, d))
        if self.on_shortage is not None:
            self.on_shortage(sources)
        return d

    def _give_back(self, slot):
        self._slots.discard(slot)
        self._held[slot.source] -= 1
        if self._held[slot.source] <= 0:
            del self._held[slot.source]
        for index, (sources, d) in enumerate(self._waiters):
            if slot.source in sources:
                del self._waiters[index]
                d.callback(slot.source)
                break

    def waiting(self):
        """
        How many starts are waiting for room.
        """
        return len(self._waiters)

    def held(self):
        """
        The slots held now, for the status page.
        """
        return sorted(self._slots, key=lambda s: (s.source, str(s.holder)))

    def usage(self, sources=()):
        """
        ``{source: (in use, limit or None)}`` for every source that has a
        limit, is in use, or is named in ``sources``.
        """
        names = set(self._limits) | set(self._held) | set(sources)
        return {name: (self._held[name], self._limits.get(name)) for name in sorted(names)}
