#!/usr/bin/env node
/*
 * Launcher for @vercel/cosmosdb-server 1.0.1 that fixes, at run time, the two stock bugs that
 * break Northstar's contract suite (see /work/shared/EMULATORS.md). Nothing under node_modules
 * is edited: the package's router is wrapped so that two of its handlers are replaced.
 *
 * 1. Reading a missing document (or one with the wrong partition key) crashed the stock
 *    read handler (TypeError -> 500). Real Cosmos answers 404 NotFound; so does this one.
 * 2. Transactional batch (POST .../docs with x-ms-cosmos-is-batch-request):
 *    - the per-operation partition key is taken from the x-ms-documentdb-partitionkey header
 *      when the operation body lacks it (the Python SDK sends it only as a header);
 *    - Patch is supported (through the package's own patch implementation);
 *    - x-ms-cosmos-batch-atomic is honoured: if any operation fails, every operation already
 *      applied is rolled back, the failing operation reports its own status, all others 424
 *      Failed Dependency, and the HTTP status is 207 Multi-Status, which is what the Cosmos
 *      gateway returns and what azure-cosmos turns into CosmosBatchOperationError.
 *
 * Atomicity for concurrent clients: the package's store is a set of in-memory Maps mutated
 * synchronously. The batch handler below awaits only while reading the request body; every
 * operation and any rollback then run in one synchronous stretch of the event loop, so no other
 * request (single write, query or batch) can observe or interleave with a half-applied batch.
 *
 * Usage: node launcher.js [--port N] [--host 127.0.0.1]
 *        [--exit-on-stdin-close]
 * Prints one line `cosmosdb-server listening on <port>` once ready. Exits on SIGTERM/SIGINT, and
 * with --exit-on-stdin-close also when its stdin closes (so a crashed parent that held the other
 * end of the pipe never leaves it running).
 */
"use strict";

const path = require("path");

const PKG = "@vercel/cosmosdb-server";
const lib = (name) => require(path.join(path.dirname(require.resolve(PKG)), name));

const cosmos = require(PKG);
const routesModule = lib("routes");
const readDocumentHandler = lib("handler/read-document").default;
const batchDocumentsHandler = lib("handler/batch-documents").default;
const documentOperations = lib("handler/_document-operations");
const patchOperations = lib("handler/_patch-operations");
const readJson = lib("json").default;
const trueHeader = lib("true-header").default;
const partitionFromHeader = lib("utils/get-partition-from-header");

const PARTITION_HEADER = "x-ms-documentdb-partitionkey";
const MAX_BATCH_OPERATIONS = 100;

const notFound = () => ({
  code: "NotFound",
  message: "Entity with the specified id does not exist in the system.",
});

/** Fix 1: a missing document (or a wrong partition key) is 404, never a 500. */
function readDocument(account, req, res, params) {
  const { dbId, collId, docId } = params;
  const collection = account.database(dbId).collection(collId);
  if (collection.read()) {
    const header = partitionFromHeader.default(req);
    if (header !== undefined) {
      let partition;
      try {
        partition = partitionFromHeader.parsePartitionKey(header, docId);
      } catch (err) {
        res.statusCode = 400;
        return { code: "BadRequest", message: err.message };
      }
      if (!collection.document(docId, partition).read()) {
        res.statusCode = 404;
        return notFound();
      }
    }
  }
  return readDocumentHandler(account, req, res, params);
}

/** The partition value (as stored in documents) for a JSON partition-key string. */
function parsePartition(raw, fallback) {
  return partitionFromHeader.parsePartitionKey(raw, fallback);
}

function documentPartition(collection, doc) {
  return collection.documents._getPartition(doc);
}

/** Snapshot of the document at (id, partition) so a failed atomic batch can restore it. */
function snapshot(collection, id, partition) {
  const data = collection.document(id, partition).read();
  return { id, partition, data: data ? { ...data } : undefined };
}

function restore(collection, snap) {
  const current = collection.document(snap.id, snap.partition).read();
  if (current) {
    collection.documents.delete(snap.id, snap.partition);
  }
  if (snap.data) {
    collection.documents._set(snap.data);
  }
}

/** Apply one batch operation; returns {statusCode, body}. Never throws for client errors. */
function applyOperation(collection, op, headerPartition, snapshots) {
  const type = op && op.operationType;
  const rawPartition = op && op.partitionKey !== undefined ? op.partitionKey : headerPartition;
  const body = op ? op.resourceBody : undefined;
  const id = type === "Create" || type === "Upsert" ? body && body.id : op && op.id;
  if (!id) {
    return { statusCode: 400, body: { code: "BadRequest", message: "missing id" } };
  }
  let partition;
  try {
    partition = parsePartition(rawPartition, id);
  } catch (err) {
    return { statusCode: 400, body: { code: "BadRequest", message: err.message } };
  }
  if (body && type !== "Patch" && documentPartition(collection, body) !== partition) {
    return {
      statusCode: 400,
      body: {
        code: "BadRequest",
        message: "PartitionKey extracted from document doesn't match the one specified in the header",
      },
    };
  }
  const existing = collection.document(id, partition).read();
  if (op.ifNoneMatch === "*" && existing) {
    return { statusCode: 412, body: { code: "PreconditionFailed", message: "if-none-match: *" } };
  }
  const input = {
    id,
    partitionKey: JSON.stringify([partition]),
    ifMatch: op.ifMatch,
    resourceBody: body,
  };
  if (type !== "Read") {
    snapshots.push(snapshot(collection, id, partition));
  }
  switch (type) {
    case "Create":
      return documentOperations.createOperation(collection, input);
    case "Upsert":
      return documentOperations.upsertOperation(collection, input);
    case "Read":
      return documentOperations.readOperation(collection, input);
    case "Delete":
      return documentOperations.deleteOperation(collection, input);
    case "Replace":
      return documentOperations.replaceOperation(collection, input);
    case "Patch":
      if (!existing) {
        return { statusCode: 404, body: notFound() };
      }
      return patchOperations.patchOperation(collection, {
        id,
        partitionKey: input.partitionKey,
        ifMatch: op.ifMatch,
        operations: (body && body.operations) || [],
        condition: body ? body.condition : undefined,
      });
    default:
      return {
        statusCode: 400,
        body: { code: "BadRequest", message: `Operation type '${type}' is not supported in Batch.` },
      };
  }
}

/** Fix 2: header partition keys, Patch, and real atomicity with rollback. */
async function batchDocuments(account, req, res, { dbId, collId }) {
  let operations;
  try {
    operations = await readJson(req);
  } catch (err) {
    res.statusCode = 400;
    return { code: "BadRequest", message: "Invalid request body" };
  }
  // ---- from here on everything is synchronous: no other request can interleave ----
  const collection = account.database(dbId).collection(collId);
  if (!collection.read()) {
    res.statusCode = 404;
    return notFound();
  }
  if (!Array.isArray(operations) || operations.length === 0) {
    res.statusCode = 400;
    return { code: "BadRequest", message: "Invalid request body" };
  }
  if (operations.length > MAX_BATCH_OPERATIONS) {
    res.statusCode = 400;
    return {
      code: "BadRequest",
      message: `Batch request has more operations than what is supported (${MAX_BATCH_OPERATIONS}).`,
    };
  }
  const atomic = trueHeader(req, "x-ms-cosmos-batch-atomic");
  const continueOnError = !atomic && trueHeader(req, "x-ms-cosmos-batch-continue-on-error");
  const headerPartition = partitionFromHeader.default(req);
  const snapshots = [];
  const results = [];
  let failedAt = -1;
  for (let i = 0; i < operations.length; i += 1) {
    if (failedAt >= 0 && !continueOnError) {
      results.push({ statusCode: 424, requestCharge: 0 });
      continue;
    }
    let result;
    try {
      result = applyOperation(collection, operations[i], headerPartition, snapshots);
    } catch (err) {
      result = { statusCode: 500, body: { code: "InternalServerError", message: err.message } };
    }
    if (result.statusCode >= 400) {
      if (failedAt < 0) failedAt = i;
      results.push({ statusCode: result.statusCode, requestCharge: 0, resourceBody: result.body });
    } else {
      results.push({
        statusCode: result.statusCode,
        requestCharge: 1,
        eTag: result.body ? result.body._etag : undefined,
        resourceBody: result.body,
      });
    }
  }
  if (failedAt < 0) {
    res.statusCode = 200;
    return results;
  }
  if (atomic) {
    for (let j = snapshots.length - 1; j >= 0; j -= 1) {
      restore(collection, snapshots[j]);
    }
    for (let k = 0; k < results.length; k += 1) {
      if (k !== failedAt) results[k] = { statusCode: 424, requestCharge: 0 };
    }
  }
  res.statusCode = 207;
  return results;
}

// Wrap the package's router: same routes, two handlers replaced.
const originalRoute = routesModule.default;
routesModule.default = (req) => {
  const route = originalRoute(req);
  if (!route) return route;
  const [params, handler] = route;
  if (handler === readDocumentHandler) return [params, readDocument];
  if (handler === batchDocumentsHandler) return [params, batchDocuments];
  return route;
};

function parseArgs(argv) {
  const args = { port: 0, host: "127.0.0.1", exitOnStdinClose: false };
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === "--port" || argv[i] === "-p") args.port = parseInt(argv[(i += 1)], 10);
    else if (argv[i] === "--host") args.host = argv[(i += 1)];
    else if (argv[i] === "--exit-on-stdin-close") args.exitOnStdinClose = true;
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return args;
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const server = cosmos.createHttpsServer({ keepAlive: true });
  server.keepAliveTimeout = 60000;
  const stop = () => {
    server.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  if (args.exitOnStdinClose) {
    process.stdin.on("end", stop);
    process.stdin.on("error", stop);
    process.stdin.resume();
  }
  server.on("error", (err) => {
    console.error(`cosmosdb-server failed: ${err.message}`);
    process.exit(1);
  });
  server.listen(args.port, args.host, () => {
    process.stdout.write(`cosmosdb-server listening on ${server.address().port}\n`);
  });
}

if (require.main === module) {
  main();
}

module.exports = { batchDocuments, readDocument };
