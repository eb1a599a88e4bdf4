"""Node labels shared by every cloud's node pools and the serving pods that select them."""

POOL_LABEL = "tfplatform.io/node-pool"
"""Every node carries its pool's stable name here; serving pods select their pool with it."""
