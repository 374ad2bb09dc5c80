// A machine's events and boot timeline, and the live stream of machine changes.
//
//   GET /api/v1/machines/:id/events     newest first, paged by `before` (event ids are time-ordered keys)
//   GET /api/v1/machines/:id/timeline   the boot-related events (DHCP, HTTP boot, TFTP, power, state), oldest first
//   GET /api/v1/events/stream           Server-Sent Events: machine.created|updated|deleted|state as they happen
//
// The stream (text/event-stream, WHATWG HTML §9.2): each message is `id: <event id>`, `event: <type>`,
// `data: <the event record as JSON>`. A client that reconnects (EventSource does by itself) sends
// `Last-Event-ID` and gets what it missed from the event log first, so nothing is lost across a reconnect.
// A comment line every 15 s keeps proxies from closing an idle stream. A client that does not read is not
// buffered for without limit: past 1 MiB queued its connection is closed, and its reconnect replays from the
// log; past MAX_REPLAY missed events it gets an `event: reset` instead (reload the list).
import type { Writable } from 'node:stream';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { TIMELINE_TYPES, machineEvents, subjectsOf } from '../../core/machine-events.ts';
import type { MachineChange } from '../../core/machines.ts';
import type { EventRecord } from '../../store/types.ts';
import { ErrorSchema } from '../schemas.ts';
import { MachineParams, MachineRef, commaLists, validatorCompiler, type MachinesApiDeps } from './machines.ts';

const EVENT_ID = '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z-\\d{6}$';
const EVENT_ID_RE = new RegExp(EVENT_ID);
/** Missed events replayed to a reconnecting client at most; beyond, `reset`. */
export const MAX_REPLAY = 1000;
const REPLAY_SCAN = 100_000;
const DEFAULT_HEARTBEAT_MS = 15_000;
const DEFAULT_MAX_QUEUE = 1024 * 1024;

const EventSchema = Type.Object({
  id: Type.String({ description: 'time-ordered event id' }),
  at: Type.String(),
  type: Type.String(),
  actor: Type.String(),
  subject: Type.Optional(Type.String()),
  data: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
});
const EventPageSchema = Type.Object({
  items: Type.Array(EventSchema),
  next: Type.Union([Type.String(), Type.Null()], { description: 'pass as before= for older events; null when there are none' }),
});
const EventsQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'default 100' })),
  before: Type.Optional(Type.String({ pattern: EVENT_ID, description: 'events older than this id' })),
  type: Type.Optional(Type.Array(Type.String({ pattern: '^[a-z0-9.-]{1,64}$' }), { maxItems: 16, description: 'type or type prefix (lease matches lease.bound); a,b or repeated' })),
}, { additionalProperties: false });
const TimelineQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'the newest N boot events, default 200' })),
}, { additionalProperties: false });
const StreamQuery = Type.Object({
  machine: Type.Optional(MachineRef),
}, { additionalProperties: false });

/**
 * Writes to a response with bounded buffering: while the socket is full (write() returned false) messages
 * queue; past `maxQueueBytes` the connection is closed rather than the process's memory growing for a
 * client that does not read.
 */
export class SseWriter {
  private queue: string[] = [];
  private queued = 0;
  private blocked = false;
  closed = false;

  constructor(private readonly out: Writable & { destroy(err?: Error): void }, private readonly maxQueueBytes: number, private readonly onOverflow: () => void = () => undefined) {
    out.on('close', () => { this.closed = true; });
  }

  send(chunk: string): void {
    if (this.closed) return;
    if (this.blocked) {
      this.queue.push(chunk);
      this.queued += chunk.length;
      if (this.queued > this.maxQueueBytes) {
        this.closed = true;
        this.queue = [];
        this.onOverflow();
        this.out.destroy();
      }
      return;
    }
    if (!this.out.write(chunk)) this.block();
  }

  private block(): void {
    this.blocked = true;
    this.out.once('drain', () => {
      this.blocked = false;
      if (this.closed || this.queue.length === 0) return;
      const text = this.queue.join('');
      this.queue = [];
      this.queued = 0;
      if (!this.out.write(text)) this.block();
    });
  }
}

export function sseMessage(e: EventRecord): string {
  // One data line: JSON has no raw newlines.
  return `id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`;
}

export function eventRoutes(deps: MachinesApiDeps): FastifyPluginAsync {
  const { registry, store } = deps;
  const heartbeatMs = deps.streamHeartbeatMs ?? DEFAULT_HEARTBEAT_MS;
  const maxQueue = deps.streamMaxQueueBytes ?? DEFAULT_MAX_QUEUE;

  return async (fastify) => {
    fastify.setValidatorCompiler(validatorCompiler);
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
    const streams = new Set<() => void>();
    app.addHook('onClose', async () => { for (const end of [...streams]) end(); });

    app.get('/api/v1/machines/:id/events', {
      config: { access: 'viewer' },
      preValidation: commaLists(['type']),
      schema: { params: MachineParams, querystring: EventsQuery, response: { 200: EventPageSchema, 400: ErrorSchema, 404: ErrorSchema } },
    }, async (req) => {
      const m = registry.resolve(req.params.id);
      const q = req.query;
      return machineEvents(store, subjectsOf(m), {
        limit: q.limit ?? 100,
        ...(q.before !== undefined ? { before: q.before } : {}),
        ...(q.type && q.type.length > 0 ? { types: q.type } : {}),
      });
    });

    app.get('/api/v1/machines/:id/timeline', {
      config: { access: 'viewer' },
      schema: { params: MachineParams, querystring: TimelineQuery, response: { 200: EventPageSchema, 400: ErrorSchema, 404: ErrorSchema } },
    }, async (req) => {
      const m = registry.resolve(req.params.id);
      const page = await machineEvents(store, subjectsOf(m), { limit: req.query.limit ?? 200, types: TIMELINE_TYPES });
      return { items: page.items.reverse(), next: page.next };
    });

    app.get('/api/v1/events/stream', {
      config: { access: 'viewer' },
      schema: { querystring: StreamQuery, response: { 400: ErrorSchema, 404: ErrorSchema } },
    }, async (req, reply) => {
      // A filter by machine takes its id now (so the stream keeps following it across renames).
      const machineId = req.query.machine !== undefined ? registry.resolve(req.query.machine).id : undefined;
      const header = req.headers['last-event-id'];
      const lastId = typeof header === 'string' && EVENT_ID_RE.test(header) ? header : undefined;

      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      const writer = new SseWriter(res, maxQueue, () => req.log.info({ machine: machineId }, 'event stream closed: the client did not keep up'));
      const wanted = (e: EventRecord) => e.type.startsWith('machine.') && (machineId === undefined || e.subject === machineId);
      let sent = lastId ?? '';
      // Live changes are held until the replay is written, then go out in id order without repeats.
      let held: EventRecord[] | undefined = lastId !== undefined ? [] : undefined;
      const deliver = (e: EventRecord) => {
        if (e.id <= sent) return;
        sent = e.id;
        writer.send(sseMessage(e));
      };
      const unsubscribe = registry.subscribe((c: MachineChange) => {
        if (!wanted(c.event)) return;
        if (held) held.push(c.event);
        else deliver(c.event);
      });
      const heartbeat = setInterval(() => writer.send(': ping\n\n'), heartbeatMs);
      heartbeat.unref();
      const end = () => {
        clearInterval(heartbeat);
        unsubscribe();
        streams.delete(end);
        if (!res.writableEnded) res.end();
      };
      streams.add(end);
      res.on('close', end);
      // retry: how long EventSource waits before reconnecting (ms).
      writer.send('retry: 2000\n\n');

      if (lastId !== undefined) {
        const missed: EventRecord[] = [];
        let scanned = 0;
        let reset = false;
        try {
          for await (const [, e] of store.events.entries({ gt: lastId })) {
            if (writer.closed) break;
            if (++scanned > REPLAY_SCAN) { reset = true; break; }
            if (!wanted(e)) continue;
            if (missed.length === MAX_REPLAY) { reset = true; break; }
            missed.push(e);
          }
        } catch (err) {
          req.log.warn({ err }, 'event stream: replay failed');
          reset = true;
        }
        if (reset) {
          // The client reloads what it shows; live events (all newer than Last-Event-ID) follow.
          writer.send(`event: reset\ndata: ${JSON.stringify({ reason: 'too many events since Last-Event-ID; reload' })}\n\n`);
        } else {
          for (const e of missed) deliver(e);
        }
        const rest = held ?? [];
        held = undefined;
        for (const e of rest) deliver(e);
      }
    });
  };
}
