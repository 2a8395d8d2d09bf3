"""Session memory, blackboard, config, notes, tabular tables and analytics over HTTP.

Each client mirrors its library service (``engines.memory``, ``engines.blackboard``…): the
same method names, arguments and result types (the core's msgspec Structs), and the same
:class:`~northstar_core.errors.NorthstarError` on failure (with ``upstream`` set). The caller's
identity comes from the token (and the client's identity headers), never from arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import msgspec

from northstar_core.analytics import AnalyticsEvent, AnalyticsEventIn
from northstar_core.blackboard import BlackboardEntry
from northstar_core.config import ConfigDocument
from northstar_core.kernel.paging import Page
from northstar_core.memory import MemoryValue
from northstar_core.notes import Note, NoteIn, NoteUpdate
from northstar_core.tabular import TabularRecord, VersionInfo
from northstar_http.client.base import BaseClient

T = TypeVar("T")


def _seg(value: str) -> str:
    return quote(value, safe="")


def _if_match(expected_version: int | None) -> dict[str, str] | None:
    return {"If-Match": f'"{expected_version}"'} if expected_version is not None else None


class _Domain:
    def __init__(self, base: BaseClient) -> None:
        self._base = base

    async def _call(self, type_: Any, method: str, path: str, **kwargs: Any) -> Any:
        body = await self._base.request(method, path, **kwargs)
        return msgspec.convert(body, type=type_) if type_ is not None else body


class MemoryClient(_Domain):
    """``engines.memory`` over HTTP."""

    async def set(
        self, session_id: str, key: str, value: Any, *, ttl_seconds: float | None = None
    ) -> MemoryValue:
        body = {"session_id": session_id, "key": key, "value": value, "ttl_seconds": ttl_seconds}
        result: MemoryValue = await self._call(MemoryValue, "POST", "/memory", json=body)
        return result

    async def get(self, session_id: str, key: str) -> MemoryValue:
        params = {"session_id": session_id, "key": key}
        result: MemoryValue = await self._call(MemoryValue, "GET", "/memory", params=params)
        return result

    async def get_all(self, session_id: str) -> list[MemoryValue]:
        body = await self._base.request("GET", "/memory", params={"session_id": session_id})
        return msgspec.convert(body["items"], type=list[MemoryValue])

    async def delete(self, session_id: str, key: str | None = None) -> int:
        body = await self._base.request("DELETE", "/memory", params={"session_id": session_id, "key": key})
        return int(body["deleted"])


class BlackboardClient(_Domain):
    """``engines.blackboard`` over HTTP (``expected_version`` travels as ``If-Match``)."""

    def _path(self, run_id: str, key: str | None = None) -> str:
        path = f"/blackboard/{_seg(run_id)}/entries"
        return f"{path}/{_seg(key)}" if key is not None else path

    async def put(
        self, run_id: str, key: str, value: Any, *, expected_version: int | None
    ) -> BlackboardEntry:
        result: BlackboardEntry = await self._call(
            BlackboardEntry,
            "PUT",
            self._path(run_id, key),
            json={"value": value},
            headers=_if_match(expected_version),
        )
        return result

    async def get(self, run_id: str, key: str) -> BlackboardEntry:
        result: BlackboardEntry = await self._call(BlackboardEntry, "GET", self._path(run_id, key))
        return result

    async def delete(self, run_id: str, key: str, *, expected_version: int | None = None) -> None:
        await self._base.request("DELETE", self._path(run_id, key), headers=_if_match(expected_version))

    async def list(self, run_id: str, *, cursor: str | None = None, limit: int = 50) -> Page[BlackboardEntry]:
        result: Page[BlackboardEntry] = await self._call(
            Page[BlackboardEntry], "GET", self._path(run_id), params={"cursor": cursor, "limit": limit}
        )
        return result


class ConfigClient(_Domain):
    """``engines.config`` over HTTP."""

    async def get(self, scope: str, *, surface_id: str | None = None) -> ConfigDocument:
        result: ConfigDocument = await self._call(
            ConfigDocument, "GET", f"/config/{_seg(scope)}", params={"surface_id": surface_id}
        )
        return result

    async def put(
        self,
        scope: str,
        values: dict[str, Any],
        *,
        expected_version: int | None,
        surface_id: str | None = None,
    ) -> ConfigDocument:
        result: ConfigDocument = await self._call(
            ConfigDocument,
            "PUT",
            f"/config/{_seg(scope)}",
            json={"values": values, "expected_version": expected_version},
            params={"surface_id": surface_id},
        )
        return result

    async def toggle(self, key: str, default: Any = None, *, surface_id: str | None = None) -> Any:
        """Resolve ``key`` surface > tenant > system > ``default``, as the library does."""
        scopes: list[tuple[str, str | None]] = [("surface", surface_id)] if surface_id else []
        for scope, sid in [*scopes, ("tenant", None), ("system", None)]:
            doc = await self.get(scope, surface_id=sid)
            if key in doc.values:
                return doc.values[key]
        return default


class NotesClient(_Domain):
    """``engines.notes`` over HTTP."""

    async def create(self, note_in: NoteIn) -> Note:
        result: Note = await self._call(Note, "POST", "/notes", json=msgspec.to_builtins(note_in))
        return result

    async def get(self, note_id: str) -> Note:
        result: Note = await self._call(Note, "GET", f"/notes/{_seg(note_id)}")
        return result

    async def update(self, note_id: str, update: NoteUpdate) -> Note:
        result: Note = await self._call(
            Note, "PUT", f"/notes/{_seg(note_id)}", json=msgspec.to_builtins(update)
        )
        return result

    async def delete(self, note_id: str, *, expected_version: int | None = None) -> None:
        await self._base.request("DELETE", f"/notes/{_seg(note_id)}", headers=_if_match(expected_version))

    async def list(
        self,
        *,
        surface_id: str | None = None,
        project_id: str | None = None,
        tag: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[Note]:
        params = {
            "surface_id": surface_id,
            "project_id": project_id,
            "tag": tag,
            "cursor": cursor,
            "limit": limit,
        }
        result: Page[Note] = await self._call(Page[Note], "GET", "/notes", params=params)
        return result


class TabularClient(_Domain):
    """``engines.tabular`` over HTTP."""

    async def put(
        self, table: str, record_id: str, json_blob: Any, *, expected_version: int | None
    ) -> TabularRecord:
        result: TabularRecord = await self._call(
            TabularRecord,
            "PUT",
            f"/tabular/{_seg(table)}/{_seg(record_id)}",
            json={"json_blob": json_blob},
            headers=_if_match(expected_version),
        )
        return result

    async def get(self, table: str, record_id: str, *, version: int | None = None) -> TabularRecord:
        result: TabularRecord = await self._call(
            TabularRecord, "GET", f"/tabular/{_seg(table)}/{_seg(record_id)}", params={"version": version}
        )
        return result

    async def delete(self, table: str, record_id: str, *, expected_version: int | None = None) -> None:
        await self._base.request(
            "DELETE", f"/tabular/{_seg(table)}/{_seg(record_id)}", headers=_if_match(expected_version)
        )

    async def versions(
        self, table: str, record_id: str, *, cursor: str | None = None, limit: int = 50
    ) -> Page[VersionInfo]:
        result: Page[VersionInfo] = await self._call(
            Page[VersionInfo],
            "GET",
            f"/tabular/{_seg(table)}/{_seg(record_id)}/versions",
            params={"cursor": cursor, "limit": limit},
        )
        return result

    async def list(self, table: str, *, cursor: str | None = None, limit: int = 50) -> Page[TabularRecord]:
        result: Page[TabularRecord] = await self._call(
            Page[TabularRecord], "GET", f"/tabular/{_seg(table)}", params={"cursor": cursor, "limit": limit}
        )
        return result


class AnalyticsClient(_Domain):
    """``engines.analytics`` over HTTP."""

    async def record(self, event: bytes | Mapping[str, Any] | AnalyticsEventIn) -> AnalyticsEvent:
        if isinstance(event, bytes):
            body: Any = msgspec.json.decode(event)
        elif isinstance(event, AnalyticsEventIn):
            body = msgspec.to_builtins(event)
        else:
            body = dict(event)
        result: AnalyticsEvent = await self._call(AnalyticsEvent, "POST", "/analytics/events", json=body)
        return result

    async def list(self, *, cursor: str | None = None, limit: int = 100) -> Page[AnalyticsEvent]:
        result: Page[AnalyticsEvent] = await self._call(
            Page[AnalyticsEvent], "GET", "/analytics/events", params={"cursor": cursor, "limit": limit}
        )
        return result
