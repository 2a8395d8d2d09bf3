"""The kernel: the storage rules of the engines, written once.

The kernel is the only code in the core that knows key layouts or calls the storage port
(:mod:`northstar_core.storage`); the domain modules above it (chat, canvas, timeline, spine,
safety, records-backed stores) speak in streams, records, pages and publications, never in
store operations. An import-linter contract keeps it so.

* :mod:`~northstar_core.kernel.streams` — sequenced append-only streams (``s#<seq>``), one
  atomic batch per append, exactly one winner per head;
* :mod:`~northstar_core.kernel.records` — versioned records (``r#<key>``) with compare-and-set
  and optional history;
* :mod:`~northstar_core.kernel.idempotency` — the one idempotency rule (``i#<key>``);
* :mod:`~northstar_core.kernel.paging` — the one page type and page-after-cursor rule;
* :mod:`~northstar_core.kernel.tail` — live tails of streams, one poller per stream per process.
"""
