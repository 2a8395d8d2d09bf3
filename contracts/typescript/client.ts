// A small chat client typed entirely from contracts/openapi.json (openapi-typescript writes
// ./schema.d.ts next to this file). It reads the fields a real UI reads, so when the document
// stops describing them — a response left untyped, a field renamed, errors undocumented — this
// file stops compiling: tests/http/test_typescript_client.py runs `tsc --strict` over it.
import type { paths } from "./schema";

// A type the document must actually describe: undocumented (never) or untyped (unknown) turns
// into a string literal naming what is missing, and any field read on it is a compile error.
type Typed<T, What extends string> = [T] extends [never]
    ? `${What}: not documented`
    : unknown extends T
      ? `${What}: untyped`
      : T;

type JsonBody<R> = R extends { content: { "application/json": infer B } } ? B : never;
type SuccessStatus = 200 | 201;
type ErrorStatus = 400 | 401 | 403 | 404 | 409 | 410 | 413 | 422 | 429 | 503;
type Responses<Op> = Op extends { responses: infer R } ? R : never;
type Success<Op> = {
    [S in keyof Responses<Op>]: S extends SuccessStatus ? JsonBody<Responses<Op>[S]> : never;
}[keyof Responses<Op>];
type Failure<Op> = {
    [S in keyof Responses<Op>]: S extends ErrorStatus ? JsonBody<Responses<Op>[S]> : never;
}[keyof Responses<Op>];

type Messages = paths["/chat/threads/{thread_id}/messages"];
type PostMessageOp = Messages["post"];
type ListMessagesOp = Messages["get"];

export type ThreadId = PostMessageOp["parameters"]["path"]["thread_id"];
export type NewMessage = Typed<
    PostMessageOp["requestBody"]["content"]["application/json"],
    "POST /chat/threads/{thread_id}/messages request body"
>;
export type PostedMessage = Typed<Success<PostMessageOp>, "POST /chat/threads/{thread_id}/messages 200/201">;
export type MessagePage = Typed<Success<ListMessagesOp>, "GET /chat/threads/{thread_id}/messages 200">;
export type ChatMessage = MessagePage["items"][number];
export type PageQuery = NonNullable<ListMessagesOp["parameters"]["query"]>;
export type ErrorEnvelope = Typed<
    Failure<PostMessageOp> | Failure<ListMessagesOp>,
    "error responses of /chat/threads/{thread_id}/messages"
>;

/** A non-2xx answer: the service's error envelope, as documented. */
export class NorthstarApiError extends Error {
    readonly code: string;
    readonly status: number;
    readonly requestId: string | null;

    constructor(envelope: ErrorEnvelope) {
        super(`${envelope.error.code}: ${envelope.error.message}`);
        this.code = envelope.error.code;
        this.status = envelope.error.http_status;
        this.requestId = envelope.error.request_id;
    }
}

export class NorthstarClient {
    constructor(
        private readonly baseUrl: string,
        private readonly token: string,
        private readonly fetchImpl: typeof fetch = fetch,
    ) {}

    /** Post a message; the same idempotency key answers the first message again (replayed). */
    postMessage(threadId: ThreadId, message: NewMessage): Promise<PostedMessage> {
        return this.request<PostedMessage>("POST", `/chat/threads/${encodeURIComponent(threadId)}/messages`, {}, message);
    }

    /** One page of messages after `query.cursor` (exclusive). */
    readPage(threadId: ThreadId, query: PageQuery = {}): Promise<MessagePage> {
        const params: Record<string, string> = {};
        if (query.cursor != null) params["cursor"] = query.cursor;
        if (query.limit != null) params["limit"] = String(query.limit);
        return this.request<MessagePage>("GET", `/chat/threads/${encodeURIComponent(threadId)}/messages`, params);
    }

    /** Every message of a thread in order, page after page. */
    async *readAll(threadId: ThreadId, limit = 100): AsyncGenerator<ChatMessage> {
        let cursor: string | null = null;
        for (;;) {
            const page: MessagePage = await this.readPage(threadId, { cursor, limit });
            yield* page.items;
            if (!page.has_more) return;
            cursor = page.next_cursor;
        }
    }

    private async request<T>(
        method: "GET" | "POST",
        path: string,
        query: Record<string, string>,
        body?: unknown,
    ): Promise<T> {
        const url = new URL(path, this.baseUrl);
        for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
        const headers: Record<string, string> = { Authorization: `Bearer ${this.token}` };
        if (body !== undefined) headers["Content-Type"] = "application/json";
        const response = await this.fetchImpl(url, {
            method,
            headers,
            body: body === undefined ? undefined : JSON.stringify(body),
        });
        const payload: unknown = await response.json();
        if (!response.ok) throw new NorthstarApiError(payload as ErrorEnvelope);
        return payload as T;
    }
}

/** Post a user message once (a retry with the same key is answered, not duplicated). */
export async function say(
    client: NorthstarClient,
    threadId: ThreadId,
    text: string,
    idempotencyKey: string,
): Promise<{ id: string; seq: number; cursor: string; replayed: boolean }> {
    const posted = await client.postMessage(threadId, { role: "user", content: text, idempotency_key: idempotencyKey });
    return { id: posted.message_id, seq: posted.seq, cursor: posted.cursor, replayed: posted.replayed };
}

/** The thread as lines of text; the error code of a refused read is kept, not thrown. */
export async function transcript(client: NorthstarClient, threadId: ThreadId): Promise<string[]> {
    const lines: string[] = [];
    try {
        for await (const message of client.readAll(threadId)) {
            lines.push(`#${message.seq} ${message.role} (${message.actor_id}): ${JSON.stringify(message.content)}`);
        }
    } catch (error) {
        if (!(error instanceof NorthstarApiError)) throw error;
        lines.push(`! ${error.code} (HTTP ${error.status}, request ${error.requestId ?? "?"})`);
    }
    return lines;
}
