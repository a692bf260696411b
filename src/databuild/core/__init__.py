"""The pure domain of DataBuild: refs, ids, wants, job runs, events, the state fold and
the reconciler.

Nothing in this package touches a disk, a socket, a thread, a subprocess or the clock;
every function takes ``now`` as a parameter. Everything above (codec, log, executors,
runtime, service, cli) builds on it; it imports nothing of theirs.
"""
