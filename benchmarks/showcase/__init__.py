"""Hand-written harness for the generated showcase service (generated/ledger).

Nothing here is generated: the reference model, the history checker, the load
client and the fault scenarios are independent of the code under test, so a
bug in the generated service cannot hide behind the same bug in its judge.
"""
