"""prompt: canonical spec text and the rendered generation request.

Only this package imports jinja2 (in :mod:`allium.prompt.builder`), and only
when a request is built; :mod:`allium.prompt.canonical` is plain Python.
"""
