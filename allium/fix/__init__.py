"""The bug-fix loop: fix a bug by editing the spec, regenerate, and keep the proof.

A fix is recorded under ``fixes/<name>/`` as ``fix.json`` (what changed and the
red/green outcome of the tests that prove it) plus ``spec.diff``; the file
contents it needs are stored once, by hash, in ``fixes/blobs/``. ``allium fix
verify`` rebuilds each fix's previous and fixed generated trees from those
blobs in a scratch folder and reruns the named tests: they must fail on the
previous tree (red) and pass on the fixed one (green). Nothing outside the
repository is needed, not even its git history.
"""

from allium.fix.evidence import Evidence, load_all, load_evidence
from allium.fix.proof import ProofResult, run_proof

__all__ = ["Evidence", "ProofResult", "load_all", "load_evidence", "run_proof"]
