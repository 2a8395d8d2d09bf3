"""The safety domain: every rule in front of a tool action is versioned data, read fresh.

* :mod:`~northstar_core.safety.documents` — the versioned policy documents (kill switches,
  firearms policy and grants, strategy-lock policy, budget limits, KPI and temperature
  corridors) and the one read of all of them a gate decision makes;
* :mod:`~northstar_core.safety.licences` — firearms licences (issue, revoke, per subject);
* :mod:`~northstar_core.safety.locks` — strategy locks and their three-wise review;
* :mod:`~northstar_core.safety.policies` — :class:`~northstar_core.safety.policies.PolicyStores`,
  the three above as one service (``engines.policies``);
* :mod:`~northstar_core.safety.budget` — the append-only usage ledger with running totals;
* :mod:`~northstar_core.safety.gates` — the gate chain (``prepare`` reads, ``decide`` evaluates
  and records on the spine and the subject's stream);
* :mod:`~northstar_core.safety.actions` — ``/actions/execute`` and ``/actions/check``: handlers
  behind the gate chain, their completion records and accounting;
* :mod:`~northstar_core.safety.checks` — the field checks the modules above share.

Nothing here knows a storage layout: documents, licences, locks and completion records are
:class:`~northstar_core.kernel.records.VersionedRecords`, the ledger a
:class:`~northstar_core.kernel.streams.SequencedStream`, decisions go to the event spine.
"""
