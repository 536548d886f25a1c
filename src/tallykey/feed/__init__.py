"""The change feed: how a verdict-affecting change made anywhere (API, console, CLI,
another node) reaches every node's verification cache, and how its author learns that
it has (SPEC §8, §10).

- `changes`: services announce changes in their own transaction; readers read them in
  commit order.
- `listener`: PostgreSQL LISTEN/NOTIFY wakes a node the moment a change commits.
- `nodes`: each node's heartbeat and acknowledgement; waiting for propagation.
- `clock`: the database's clock, which every node judges time by.
- `follower`: the background loop of one node, and its cache lease.
"""
