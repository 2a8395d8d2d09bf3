"""The kernel: the storage rules of the engines, written once.

The kernel is the only code in the core that knows key layouts or calls the storage port
(:mod:`northstar_core.storage`); the domain modules above it (chat, canvas, timeline, spine,
safety, the record-backed stores) speak in streams, records, pages and publications, never in
store operations. Two import-linter contracts keep it so: no domain module imports the port,
and the kernel imports no domain module.

Each key prefix means one thing across the kernel:

* :mod:`~northstar_core.kernel.streams` — sequenced append-only streams: ``s#<seq>``, one
  atomic batch per append, exactly one winner per head;
* :mod:`~northstar_core.kernel.idempotency` — the one idempotency rule: ``i#<key>``, looked up
  at most once per request, recorded in the batch it guards (the spine, whose events land in a
  partition the key cannot name, claims its keys first instead: ``eventlog``);
* :mod:`~northstar_core.kernel.records` — versioned records ``r#<key>`` with compare-and-set,
  TTL and optional history ``h#<key>#<version>``;
* :mod:`~northstar_core.kernel.publication` — ordered exactly-once publication of a numbered
  series onto a stream (marker ``m#<series>``);
* :mod:`~northstar_core.kernel.checkpoints` — chunked snapshots ``c#<seq>#<chunk>`` beside a
  stream;
* :mod:`~northstar_core.kernel.headers` — a stream's header item, written with its first entry;
* :mod:`~northstar_core.kernel.write_once` — write-once entries ``e#<key>`` (of two writers of
  one key, exactly one stores its value);
* :mod:`~northstar_core.kernel.buckets` — time-bucketed, sharded logs: partitions of one hour
  and one shard (``<base>|<YYYYMMDDHH>|<shard>``) and a directory of buckets (``b#``), read in
  time order by merging the shards;
* :mod:`~northstar_core.kernel.eventlog` — the spine's event log on it: each event as two items
  (``ev#`` time order, ``er#`` run order) in one batch, idempotency claims ``i#``, run starts
  ``r#``;
* :mod:`~northstar_core.kernel.ids` — time-ordered UUIDv7 ids (key order is creation order);
* :mod:`~northstar_core.kernel.paging` — the one page type and page-after-cursor rule;
* :mod:`~northstar_core.kernel.tail` — live tails of streams, woken by local appends and by the
  shared activity index (:mod:`~northstar_core.kernel.activity`, ``~activity`` / ``a#<process>``)
  read once per store and interval.
"""
