"""The thin HTTP shell: Litestar app, auth, error envelope, SSE, CLI and Python client.

It maps HTTP onto :class:`northstar_core.engines.Engines` and nothing else; every rule lives
in the core.
"""
