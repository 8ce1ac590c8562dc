"""The chaos suite: the production layout on loopback, one fault at a time under steady load, and the invariants
a hospital needs afterwards (nothing answered 2xx lost, nothing stored or sent twice, every agent socket complete
after resync, no outbound message left queued or sending), with the recovery time.

    .venv/bin/python -m bench.chaos            # all five faults, the longer load, the table (about 5 minutes)
    .venv/bin/python -m bench.chaos --quick    # the profile tests/chaos/test_chaos.py runs

Modules: layout (the processes and the faults' primitives), proxy (the round-robin load balancer), world (the
hospital the load talks to), load (webhooks, replies, reconnecting sockets), run (inject, settle, check), checks
(the database's side), report (the table). See bench/README.md.
"""
