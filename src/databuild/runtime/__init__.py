"""The runtime: the controller loop that carries out the core's decisions.

It feeds inputs (want requests, cancels, executor reports, clock ticks) to the pure
``Reconciler``, appends the resulting events to the Build Event Log in one transaction per
step, and only then acknowledges clients and carries out effects (start or kill runs).
"""
