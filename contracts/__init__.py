"""The backend-agnostic contract suite and the published contracts.

Every adapter — ours or a third party's — runs the same tests by subclassing the contract
classes and supplying a ``harness`` fixture (see :mod:`contracts.harness`). The published
contracts live beside this file: ``error_codes.json`` (the error catalogue), ``events.json``
(event shapes) and ``openapi.json`` (generated from the HTTP shell).
"""
