"""
Counting provider connections.

Each source (provider subscription) allows a limited number of simultaneous
streams.  A :class:`Slot` is taken when a stream for a source starts being
opened (probe included) and given back exactly once when it ends, whatever
the reason.

Several accounts of one provider may share a source name (pooled
subscriptions): then the source's limit is their sum and each account also
has a limit of its own, so a slot is taken for a ``(source, account)`` pair
and must fit both.  Rows no provider owns have no account and are counted
against their source only.
"""

from collections import Counter

from twisted.internet import defer


class Slot:
    """
    One connection to one source (and, for a provider's row, one of its
    accounts), held by ``holder`` (a description for the status page).
    ``release`` may be called any number of times; only the first gives the
    connection back.
    """

    def __init__(self, pool, source, holder, account=None):
        self.source = source
        self.account = account
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
        account = f" account {self.account!r}" if self.account is not None else ""
        return f"<Slot {self.source!r}{account} {state} by {self.holder}>"


class SourceSlots:
    """
    The connection count of every source (and provider account) against its
    limit, with a first-come first-served waiting list for when they are full.

    ``limits`` is ``{source: most streams}``; ``account_limits`` is
    ``{account: most streams}``.  Either may be changed while running with
    :meth:`set_limits` (a provider sync learns an Xtream account's
    ``max_connections``); waiters are woken when a change makes room.
    """

    def __init__(self, limits, account_limits=None):
        self._limits = dict(limits)
        self._account_limits = dict(account_limits or {})
        self._held = Counter()
        self._held_accounts = Counter()
        self._slots = set()
        self._waiters = []
        self.on_shortage = None

    def set_limits(self, limits=None, account_limits=None):
        """
        Replace the source limits and/or the account limits (None leaves
        that one as it is).  Slots held beyond a lowered limit stay held;
        new ones wait until usage is below it.
        """
        if limits is not None:
            self._limits = dict(limits)
        if account_limits is not None:
            self._account_limits = dict(account_limits)
        self._wake()

    def limit(self, source):
        """
        The most streams ``source`` may have at once, or None for no limit.
        """
        return self._limits.get(source)

    def account_limit(self, account):
        """
        The most streams provider account ``account`` may have at once, or
        None for no limit of its own.
        """
        return self._account_limits.get(account)

    def in_use(self, source):
        """
        How many slots of ``source`` are held now.
        """
        return self._held[source]

    def account_in_use(self, account):
        """
        How many slots of provider account ``account`` are held now.
        """
        return self._held_accounts[account]

    def has_room(self, source, extra=1, account=None):
        """
        Whether ``extra`` more connections to ``source`` (through
        ``account``, when given) fit in its limit and the account's.
        """
        limit = self._limits.get(source)
        if limit is not None and self._held[source] + extra > limit:
            return False
        if account is not None:
            account_limit = self._account_limits.get(account)
            if account_limit is not None and self._held_accounts[account] + extra > account_limit:
                return False
        return True

    def acquire(self, source, holder, account=None):
        """
        Take a slot of ``source`` (through provider account ``account``,
        None for a row no provider owns) for ``holder``, or return None when
        the source or the account is full.
        """
        if not self.has_room(source, account=account):
            return None
        slot = Slot(self, source, holder, account)
        self._held[source] += 1
        if account is not None:
            self._held_accounts[account] += 1
        self._slots.add(slot)
        return slot

    def wait_for_room(self, sources, accounts=None):
        """
        A Deferred that fires (with a source) once any of ``sources`` may
        have room.  Cancel it to stop waiting.

        ``accounts``, when given, is the set of ``(source, account)`` pairs
        the waiting tune could use (account None for rows no provider
        owns); then room means room for one of those pairs, so a tune whose
        rows all belong to a full account is not woken by another account
        of the same source getting room.

        When nobody else is waiting and there is room already, it fires at
        once.  ``on_shortage(sources)``, when set, is told that someone is
        waiting, so idle streams can be asked to make room.
        """
        sources = frozenset(sources)
        pairs = frozenset(accounts) if accounts is not None else frozenset((s, None) for s in sources)
        if not self._waiters:
            found = self._room_for(pairs)
            if found is not None:
                return defer.succeed(found)

        def cancel(d):
            self._waiters[:] = [w for w in self._waiters if w[1] is not d]

        d = defer.Deferred(cancel)
        self._waiters.append((pairs, d))
        if self.on_shortage is not None:
            self.on_shortage(sources)
        return d

    def _room_for(self, pairs):
        for source, account in sorted(pairs, key=lambda p: (p[0], p[1] or "")):
            if self.has_room(source, account=account):
                return source
        return None

    def _give_back(self, slot):
        self._slots.discard(slot)
        self._held[slot.source] -= 1
        if self._held[slot.source] <= 0:
            del self._held[slot.source]
        if slot.account is not None:
            self._held_accounts[slot.account] -= 1
            if self._held_accounts[slot.account] <= 0:
                del self._held_accounts[slot.account]
        self._wake(freed=slot.source)

    def _wake(self, freed=None):
        """
        Fire waiters, oldest first, that now have room.  After a slot of
        source ``freed`` is given back, only the first waiter that could use
        that source is told (one freed slot serves one waiter); after a
        change of limits, every waiter with room is.
        """
        index = 0
        while index < len(self._waiters):
            pairs, d = self._waiters[index]
            if freed is not None and all(source != freed for source, _ in pairs):
                index += 1
                continue
            found = self._room_for(pairs)
            if found is None:
                index += 1
                continue
            del self._waiters[index]
            d.callback(found)
            if freed is not None:
                return

    def waiting(self):
        """
        How many starts are waiting for room.
        """
        return len(self._waiters)

    def held(self):
        """
        The slots held now, for the status page.
        """
        return sorted(self._slots, key=lambda s: (s.source, s.account or "", str(s.holder)))

    def usage(self, sources=()):
        """
        ``{source: (in use, limit or None)}`` for every source that has a
        limit, is in use, or is named in ``sources``.
        """
        names = set(self._limits) | set(self._held) | set(sources)
        return {name: (self._held[name], self._limits.get(name)) for name in sorted(names)}

    def account_usage(self, accounts=()):
        """
        ``{account: (in use, limit or None)}`` for every provider account
        that has a limit, is in use, or is named in ``accounts``.
        """
        names = set(self._account_limits) | set(self._held_accounts) | set(accounts)
        return {
            name: (self._held_accounts[name], self._account_limits.get(name)) for name in sorted(names)
        }
