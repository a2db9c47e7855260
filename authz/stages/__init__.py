"""The stages of a decision, in order (authz.pipeline runs them):

1. route        stages/route.py        match the compiled policy -> Route
2. identify     stages/identify.py     client address (trusted proxies), address lists
                stages/geo.py          country and network (GeoIP), country rules
                stages/evidence.py     session, device, TLS fingerprint; evidence for reputation
3. authenticate stages/authenticate/   JWT, RFC 9421 signatures, Kong hmac (pure CPU, cached)
   challenge    stages/challenge.py    proof of work (a route's `challenge:`): refuse or plan its claim
4. plan         stages/replay.py       single-use claims (nonces, jti) planned by the methods
                stages/quota.py        token buckets
                                       ... all as operations of one batch
5. apply        authz/store/           the store runs the batch: one round trip
6. judge        each check reads its result
7. respond      stages/respond.py      Decision with headers, body, signals
"""
