"""
Periodic jobs that cannot die silently.

A ``LoopingCall`` whose body raises stops for good and nobody hears of it.
:func:`periodic` makes a ``TimerService`` whose body logs its own failures
(synchronous or in the Deferred it returns) and carries on, so one bad run
never ends the job.  Runs never overlap: the next waits for the Deferred.
"""

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

log = Logger()


def guarded(function, description):
    """
    ``function`` made safe to run from a loop: its failures, raised or in
    the Deferred it returns, are logged as "``description`` failed" and
    never reach the loop.
    """

    def run():
        d = defer.maybeDeferred(function)
        d.addErrback(lambda failure: log.failure("{description} failed", failure, description=description))
        return d

    return run


def periodic(step, function, description, reactor=None):
    """
    A ``TimerService`` calling ``function()`` every ``step`` seconds (first
    at once), :func:`guarded`, so the job goes on after a failure.
    """
    service = TimerService(step, guarded(function, description))
    service.clock = reactor
    return service
