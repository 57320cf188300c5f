"""Checkers for histories recorded by tests: linearizability of client calls, correctness of watch streams.

Nothing in this package imports the store: a checker that shared code with the
system it judges could share its bugs too.
"""
