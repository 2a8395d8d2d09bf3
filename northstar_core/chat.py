"""Chat: durable threads of messages (resource kind ``chat_store``).

Layout (all through the routing registry's ``chat_store`` route):

* one :class:`SequencedStream` per thread, partition ``<tenant>|<mode>|thread|<thread_id>``:
  the messages, their idempotency records, and the thread's metadata as the stream's header
  (:mod:`~northstar_core.kernel.headers`: written in the same atomic batch as message 1);
* one index partition per user, ``<tenant>|<mode>|chat_threads|<user>``: a write-once entry
  (:mod:`~northstar_core.kernel.write_once`) per thread the user posted to, keyed by thread id
  (written before the user's first message lands there, so an acknowledged message is always
  reachable from the poster's thread list).

A post costs one store write, plus one read of the key's record when it carries an
idempotency key (the append then skips its own look-up), plus one write the first time this
process sees the user post to the thread (the index entry; known entries are remembered). On a
backend without atomic checks the append needs the thread's head read first: a keyed post reads
it in the same round trip as the key's record, so it is still two round trips (three calls).

Retention: with the route option ``default_ttl_seconds`` each message expires that long after
it was posted; the thread's numbering goes on (the stream's floor, kernel/streams.py), so
cursors stay valid across an expired history.

Guarantees: a message is acknowledged only once it is stored; posting the same
``idempotency_key`` again returns the first message marked ``replayed`` and writes nothing; a
different payload under the same key is 422 ``chat.idempotency_mismatch``. Cursors are signed
and bound to tenant + mode + thread; reads after a cursor are exclusive; a cursor that is
foreign, tampered or ahead of the thread's head is 410 ``chat.cursor_invalid``.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator
from typing import Any, Final, Literal

import msgspec

from northstar_core.clock import Clock, iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError, cursor_invalid, not_found
from northstar_core.identity import ID_PATTERN, RequestContext
from northstar_core.kernel.headers import header_ops, read_header
from northstar_core.kernel.idempotency import fingerprint
from northstar_core.kernel.paging import Page, page_of
from northstar_core.kernel.records import Item
from northstar_core.kernel.streams import SequencedStream
from northstar_core.kernel.tail import TailHub
from northstar_core.kernel.write_once import WriteOnceEntries, entry_key
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import check_id, partition, subject_segment

KIND: Final = "chat_store"
DOMAIN: Final = "chat"
ROLES: Final[tuple[str, ...]] = ("user", "agent", "system", "tool")
MAX_CONTENT_BYTES: Final = 64_000
DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 200
_INDEXED_CACHE_SIZE: Final = 10_000  # thread-index entries known to exist (per process)

Role = Literal["user", "agent", "system", "tool"]


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A stored message, with the identity scope it was written in."""

    message_id: str
    thread_id: str
    seq: int
    role: str
    content: Any
    actor_id: str
    idempotency_key: str | None
    created_at: str
    tenant_id: str
    mode: str
    user_id: str
    agent_id: str | None = None
    project_id: str | None = None
    surface_id: str | None = None
    run_id: str | None = None


class ThreadMeta(msgspec.Struct, frozen=True, kw_only=True):
    thread_id: str
    created_at: str
    created_by: str
    tenant_id: str
    mode: str
    project_id: str | None = None
    surface_id: str | None = None


class ThreadEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a user's thread list."""

    thread_id: str
    first_posted_at: str


class ChatEntry(ChatMessage, frozen=True, kw_only=True):
    """A message as readers receive it: the stored message plus its own resume ``cursor``
    (the page rule of :mod:`northstar_core.kernel.paging`; the wire form is exactly this struct)."""

    cursor: str


class PostedMessage(msgspec.Struct, frozen=True, kw_only=True):
    message: ChatMessage
    cursor: str
    replayed: bool


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    thread: ThreadMeta
    messages: list[ChatEntry]
    head_seq: int
    head_cursor: str


def _limit(limit: int | None, default: int = DEFAULT_PAGE) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= MAX_PAGE:
        raise NorthstarError(
            "chat.invalid_request",
            f"limit must be between 1 and {MAX_PAGE}",
            422,
            details={"field": "limit", "value": limit},
        )
    return limit


def _decode(item: Item) -> ChatMessage:
    return msgspec.json.decode(item.value, type=ChatMessage)


def _entry(message: ChatMessage, cursor: str) -> ChatEntry:
    return ChatEntry(**msgspec.structs.asdict(message), cursor=cursor)


class ChatTail:
    """A validated live tail of one thread; iterate :meth:`events` to follow it."""

    def __init__(
        self, service: ChatService, ctx: RequestContext, stream: SequencedStream, after: int
    ) -> None:
        self._service = service
        self._ctx = ctx
        self.stream = stream
        self.after_seq = after

    def items(self, *, heartbeat: float | None = None) -> AsyncGenerator[Item | None, None]:
        """The raw stored entries after the start position, then live ones (``None`` on idle
        heartbeats); turn each into a message with :meth:`decode`. The leanest way to follow
        a thread (one generator per subscriber; the SSE route uses it)."""
        return self._service.tails.follow(self.stream, self.after_seq, heartbeat=heartbeat)

    def decode(self, item: Item) -> ChatEntry:
        """A stored entry as the message with its cursor."""
        message = _decode(item)
        return _entry(message, self._service.cursor(self._ctx, message.thread_id, message.seq))

    async def events(
        self, *, heartbeat: float | None = None
    ) -> AsyncGenerator[ChatEntry | None, None]:
        """Messages after the start position, then live ones; ``None`` on idle heartbeats."""
        follow = self.items(heartbeat=heartbeat)
        # aclosing: closing this generator must unsubscribe the inner one at once, not at GC.
        async with contextlib.aclosing(follow):
            async for item in follow:
                yield None if item is None else self.decode(item)


class ChatService:
    """The chat use-cases: post, list after a cursor, snapshot, thread list, live tail."""

    def __init__(self, registry: RoutingRegistry, cursors: CursorCodec, clock: Clock, tails: TailHub) -> None:
        self.registry = registry
        self.cursors = cursors
        self.clock = clock
        self.tails = tails
        self._indexed: OrderedDict[tuple[bytes, str, str], None] = OrderedDict()

    # --- helpers ---------------------------------------------------------------------------

    async def _stream(self, ctx: RequestContext, thread_id: str) -> SequencedStream:
        check_id(DOMAIN, "thread_id", thread_id)
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        # the route's retention: messages expire that long after they were posted
        return SequencedStream(
            store, partition(ctx, "thread", thread_id), DOMAIN,
            ttl_seconds=store.route.options.default_ttl_seconds,
        )

    def cursor(self, ctx: RequestContext, thread_id: str, seq: int) -> str:
        """The cursor of position ``seq`` of ``thread_id`` for this tenant and mode."""
        return self.cursors.encode(DOMAIN, ctx.tenant_id, ctx.mode, f"thread:{thread_id}", str(seq))

    def _position(self, ctx: RequestContext, thread_id: str, cursor: str) -> int:
        position = self.cursors.decode(DOMAIN, ctx.tenant_id, ctx.mode, f"thread:{thread_id}", cursor)
        if not position.isdigit():
            raise cursor_invalid(DOMAIN, cursor, "malformed position")
        return int(position)

    async def _checked_position(
        self, ctx: RequestContext, stream: SequencedStream, thread_id: str, cursor: str
    ) -> int:
        position = self._position(ctx, thread_id, cursor)
        if position > 0 and position > await stream.head():
            raise cursor_invalid(DOMAIN, cursor, "cursor is ahead of the thread's head")
        return position

    # --- use-cases -------------------------------------------------------------------------

    async def post(
        self,
        ctx: RequestContext,
        thread_id: str,
        *,
        role: str,
        content: Any,
        idempotency_key: str | None = None,
    ) -> PostedMessage:
        """Append one message (member role or above). Idempotent by ``idempotency_key``."""
        ctx.require_role("member")
        stream = await self._stream(ctx, thread_id)
        if role not in ROLES:
            raise NorthstarError(
                "chat.invalid_request",
                f"role must be one of {', '.join(ROLES)}",
                422,
                details={"field": "role", "value": str(role)[:50]},
            )
        if content is None or content == "":
            raise NorthstarError(
                "chat.invalid_request", "content must not be empty", 422, details={"field": "content"}
            )
        size = len(msgspec.json.encode(content))
        if size > MAX_CONTENT_BYTES:
            raise NorthstarError(
                "chat.message_too_large",
                f"content is {size} bytes; the limit is {MAX_CONTENT_BYTES}",
                413,
                details={"size": size, "limit": MAX_CONTENT_BYTES},
            )
        if idempotency_key is not None:
            check_id(DOMAIN, "idempotency_key", idempotency_key)
        actor_id = ctx.agent_id or ctx.user_id
        fp = fingerprint({"thread_id": thread_id, "role": role, "content": content, "actor_id": actor_id})
        head: int | None = None
        if idempotency_key is not None:
            # The one look-up of the key: the append below is told so (key_checked) and goes
            # straight to its batch, whose condition on the record still catches a concurrent
            # attempt with the same key. Where an append must read the head first (no atomic
            # checks), the head is read in the same round trip and handed to it.
            prior, head = await stream.look_up(idempotency_key, fp)
            if prior is not None:
                replayed = msgspec.json.decode(prior.result, type=ChatMessage)
                # the first attempt may have stopped between its commit and its notice (a
                # cancelled request): other processes learn of the message now, not at the
                # next safety read
                self.tails.notify(stream, replayed.seq)
                return self._posted(ctx, replayed, True)
        now = self.clock.now()
        await self._index_thread(ctx, thread_id, now)
        # An identifier, not a secret (isolation is by partition): a random-module UUID4 avoids a
        # getrandom syscall per post (benchmark P1); the module is reseeded in forked processes.
        message_id = "m_" + uuid.UUID(bytes=random.randbytes(16), version=4).hex
        built: dict[int, ChatMessage] = {}

        def build(first: int) -> list[bytes]:
            message = ChatMessage(
                message_id=message_id,
                thread_id=thread_id,
                seq=first,
                role=role,
                content=content,
                actor_id=actor_id,
                idempotency_key=idempotency_key,
                created_at=iso(now),
                agent_id=ctx.agent_id,
                **ctx.scope(),
            )
            built[first] = message
            return [msgspec.json.encode(message)]

        def result(first: int, last: int) -> dict[str, Any]:
            return msgspec.to_builtins(built[first])  # type: ignore[no-any-return]

        def meta() -> bytes:
            return msgspec.json.encode(
                ThreadMeta(
                    thread_id=thread_id,
                    created_at=iso(now),
                    created_by=actor_id,
                    tenant_id=ctx.tenant_id,
                    mode=ctx.mode,
                    project_id=ctx.project_id,
                    surface_id=ctx.surface_id,
                )
            )

        appended = await stream.append(
            build,
            now=now,
            idempotency_key=idempotency_key,
            payload_fingerprint=fp,
            key_checked=True,
            known_head=head,
            result=result,
            extra_ops=lambda first, _last: header_ops(first, meta()) if first == 1 else (),
        )
        message = msgspec.json.decode(appended.result, type=ChatMessage)
        # a replay too: its first attempt may not have lived to give notice
        self.tails.notify(stream, appended.last_seq)
        return self._posted(ctx, message, appended.replayed)

    def _posted(self, ctx: RequestContext, message: ChatMessage, replayed: bool) -> PostedMessage:
        return PostedMessage(
            message=message, cursor=self.cursor(ctx, message.thread_id, message.seq), replayed=replayed
        )

    async def _threads(self, ctx: RequestContext) -> WriteOnceEntries:
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        return WriteOnceEntries(store, partition(ctx, "chat_threads", subject_segment(ctx.user_id)))

    async def _index_thread(self, ctx: RequestContext, thread_id: str, now: float) -> None:
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        part = partition(ctx, "chat_threads", subject_segment(ctx.user_id))
        # Index entries are never deleted, so once seen (or written) here they need no re-write:
        # this saves a store call on every post to a known thread (benchmark P1). The route is
        # part of the key: a tenant re-routed elsewhere is indexed on its new backend.
        known = (msgspec.json.encode(store.route), part, thread_id)
        if known in self._indexed:
            self._indexed.move_to_end(known)
            return
        entry = ThreadEntry(thread_id=thread_id, first_posted_at=iso(now))
        # An entry already there (a concurrent or earlier first post) is kept as it is.
        await WriteOnceEntries(store, part).create(thread_id, msgspec.json.encode(entry))
        self._indexed[known] = None
        if len(self._indexed) > _INDEXED_CACHE_SIZE:
            self._indexed.popitem(last=False)

    async def list_messages(
        self, ctx: RequestContext, thread_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> Page[ChatEntry]:
        """Messages strictly after ``cursor`` (from the start without one), oldest first."""
        size = _limit(limit)
        stream = await self._stream(ctx, thread_id)
        after = await self._checked_position(ctx, stream, thread_id, cursor) if cursor else 0
        messages = [_decode(item) for item in await stream.read(after, size + 1)]
        return page_of(
            messages,
            size,
            lambda m: self.cursor(ctx, thread_id, m.seq),
            lambda m: _entry(m, self.cursor(ctx, thread_id, m.seq)),
            resume_from=self.cursor(ctx, thread_id, after),
            stream=True,
        )

    async def snapshot(self, ctx: RequestContext, thread_id: str, *, last: int | None = None) -> Snapshot:
        """Thread metadata, its last ``last`` messages and the head cursor (404 if no thread)."""
        size = _limit(last)
        stream = await self._stream(ctx, thread_id)
        meta = await read_header(stream)
        if meta is None:
            raise not_found(DOMAIN, f"thread '{thread_id}'", thread_id=thread_id)
        messages = [_decode(item) for item in await stream.read_last(size)]
        head = messages[-1].seq if messages else 0
        return Snapshot(
            thread=msgspec.json.decode(meta, type=ThreadMeta),
            messages=[_entry(m, self.cursor(ctx, thread_id, m.seq)) for m in messages],
            head_seq=head,
            head_cursor=self.cursor(ctx, thread_id, head),
        )

    async def list_threads(
        self, ctx: RequestContext, *, cursor: str | None = None, limit: int | None = None
    ) -> Page[ThreadEntry]:
        """The threads the caller posted to, ordered by thread id."""
        size = _limit(limit)
        threads = await self._threads(ctx)
        binding = f"threads:{subject_segment(ctx.user_id)}"
        after: str | None = None
        if cursor:
            after = self.cursors.decode(DOMAIN, ctx.tenant_id, ctx.mode, binding, cursor)
            if not ID_PATTERN.fullmatch(after):  # every position of this list is a thread id
                raise cursor_invalid(DOMAIN, cursor, "malformed position")
        items = await threads.list(after_key=after, limit=size + 1)
        return page_of(
            items,
            size,
            lambda item: self.cursors.encode(DOMAIN, ctx.tenant_id, ctx.mode, binding, entry_key(item)),
            lambda item: msgspec.json.decode(item.value, type=ThreadEntry),
            resume_from=cursor,
            stream=True,
        )

    async def open_tail(self, ctx: RequestContext, thread_id: str, cursor: str | None = None) -> ChatTail:
        """Validate ``cursor`` now (410 before any stream starts) and return the tail.

        Without a cursor the tail starts at the current head (only new messages).
        """
        stream = await self._stream(ctx, thread_id)
        if cursor:
            after = await self._checked_position(ctx, stream, thread_id, cursor)
        else:
            after = await stream.head()
        return ChatTail(self, ctx, stream, after)

    async def head_cursor(self, ctx: RequestContext, thread_id: str) -> str:
        """The cursor of the thread's last message (of its start while it has none): readers
        starting there see only new messages."""
        return self.cursor(ctx, thread_id, await (await self._stream(ctx, thread_id)).head())

    async def follow(
        self, ctx: RequestContext, thread_id: str, cursor: str | None = None
    ) -> AsyncGenerator[ChatEntry, None]:
        """Messages after ``cursor`` (from the current head without one), then live ones, each
        once and in order, until the consumer stops iterating. A bad cursor raises 410 at the
        first iteration; use :meth:`open_tail` to check it before committing to a stream."""
        tail = await self.open_tail(ctx, thread_id, cursor)
        events = tail.events()
        async with contextlib.aclosing(events):
            async for entry in events:
                if entry is not None:
                    yield entry


def message_to_dict(message: ChatMessage, cursor: str, **extra: Any) -> dict[str, Any]:
    """The wire shape of a message: its fields plus its cursor."""
    out: dict[str, Any] = msgspec.to_builtins(message)
    out["cursor"] = cursor
    out.update(extra)
    return out


__all__ = [
    "ROLES",
    "ChatEntry",
    "ChatMessage",
    "ChatService",
    "ChatTail",
    "PostedMessage",
    "Role",
    "Snapshot",
    "ThreadEntry",
    "ThreadMeta",
    "message_to_dict",
]
