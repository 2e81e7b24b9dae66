"""Task Manager (IHE AIW-I): the UPS service over the store, and its housekeeping.

``service`` applies the UPS rules of :mod:`ai_orchestrator.ups` to the store, one transaction per operation;
``scheduling`` holds what every scheduled workitem carries and the idempotent calls shared by the requester and
housekeeping; ``housekeeping`` cancels stale work, replaces lost performers' work and purges old items.
"""
