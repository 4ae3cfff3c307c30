"""Checks on what a model wrote, before it is published: declared per block and site-wide,
run on every answer, repaired deterministically where they can be, and told to the model
when they cannot (see trinity.review for the loop that asks again)."""
