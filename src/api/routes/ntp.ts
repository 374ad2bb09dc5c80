// GET /api/v1/ntp (viewer): the NTP service's view of time: whether it is synchronised and to what (stratum,
// reference, offset applied to the host clock, root delay and dispersion), each upstream's reachability and
// latest measurement, and what became of the requests it received. /metrics carries the same figures.
import Type from 'typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { NtpStatus } from '../../services/ntp/server.ts';

/** The NTP service as the API sees it (src/services/ntp/server.ts NtpService). */
export interface NtpStatusSource {
  status(): NtpStatus;
}

const Num = (description: string) => Type.Union([Type.Number(), Type.Null()], { description });

const UpstreamSchema = Type.Object({
  name: Type.String({ description: 'as configured (ntp.upstream)' }),
  address: Type.Union([Type.String(), Type.Null()], { description: 'the IPv4 address polled; null until the name resolves' }),
  port: Type.Integer(),
  reach: Type.Integer({ minimum: 0, maximum: 255, description: 'RFC 5905 reach register: one bit per poll, latest in bit 0' }),
  reachable: Type.Boolean({ description: 'answered at least one of the last eight polls' }),
  selected: Type.Boolean({ description: 'the upstream metalbox follows' }),
  stratum: Type.Union([Type.Integer(), Type.Null()]),
  offsetSeconds: Num('the upstream\'s clock minus the host clock (best sample)'),
  delaySeconds: Num('round trip to it (best sample)'),
  rootDistanceSeconds: Num('bound on the error of its time as we see it'),
  sampleAgeSeconds: Num('age of the best sample'),
  pollIntervalSeconds: Type.Number({ description: 'current interval between polls (backs off while unanswered)' }),
  kiss: Type.Union([Type.String(), Type.Null()], { description: 'last Kiss-o\'-Death code it sent (RATE, DENY, RSTR)' }),
  lastError: Type.Union([Type.String(), Type.Null()], { description: 'why the last poll gave no sample' }),
  polls: Type.Integer(),
  replies: Type.Integer(),
});

export const NtpStatusSchema = Type.Object({
  synchronised: Type.Boolean({ description: 'false: replies say leap 3, stratum 16 (clients will not use them)' }),
  source: Type.Enum(['upstream', 'local', 'none'], { description: 'upstream: following one; local: ntp.localStratum; none: unsynchronised' }),
  leap: Type.Integer({ minimum: 0, maximum: 3 }),
  stratum: Type.Integer({ minimum: 1, maximum: 16 }),
  precision: Type.Integer({ description: 'log2 seconds' }),
  referenceId: Type.String({ description: 'the upstream\'s address, 127.127.1.1 or LOCL for the local clock, empty when unsynchronised' }),
  referenceTime: Type.Union([Type.String(), Type.Null()]),
  offsetSeconds: Type.Number({ description: 'correction added to the host clock in the time served (the host clock itself is never set)' }),
  rootDelaySeconds: Type.Number(),
  rootDispersionSeconds: Type.Number(),
  upstream: Type.Union([Type.String(), Type.Null()], { description: 'the upstream followed' }),
  localStratum: Type.Union([Type.Integer(), Type.Null()]),
  upstreams: Type.Array(UpstreamSchema),
  requests: Type.Object({
    answered: Type.Integer(), kissRate: Type.Integer(), rateDropped: Type.Integer(), malformed: Type.Integer(),
    ignored: Type.Integer({ description: 'well-formed packets that are not client requests' }),
  }),
  rateLimitedClients: Type.Integer({ description: 'client addresses the rate limiter tracks' }),
});

export function ntpRoutes(ntp: NtpStatusSource): FastifyPluginAsync {
  return async (fastify) => {
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
    app.get('/api/v1/ntp', {
      config: { access: 'viewer' },
      schema: { summary: 'NTP: synchronisation, stratum, offset, upstreams and their reachability, request counts', response: { 200: NtpStatusSchema } },
    }, async () => ntp.status());
  };
}
