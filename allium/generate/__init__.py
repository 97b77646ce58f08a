"""generate: plan units, stage and swap outputs safely, and keep the lockfile.

* :mod:`allium.generate.units` - the generation plan (units, order, slice hashes);
* :mod:`allium.generate.writer` - staged, validated, atomically swapped output;
* :mod:`allium.generate.lockfile` - ``generated/allium.lock``.

Prompts are rendered by :mod:`allium.prompt.builder`.
"""
