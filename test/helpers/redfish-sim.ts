// A Redfish service simulator for tests, written from the DMTF documents: DSP0266 (protocol: service root
// readable without authentication, session login with X-Auth-Token and Location, HTTP Basic, ETags and
// If-Match/412/428, actions, error responses with @Message.ExtendedInfo from the Base registry DSP8011) and
// DSP0268 (ServiceRoot, ComputerSystemCollection, ComputerSystem with PowerState, Boot override and the
// #ComputerSystem.Reset action with ResetType@Redfish.AllowableValues or @Redfish.ActionInfo, Chassis,
// Manager, SessionService/Sessions). HTTPS on 127.0.0.1 with a self-signed certificate made by openssl at
// test time. It records every request (with whether it carried credentials) so tests can assert on them.
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface SimCertificate {
  key: string;
  cert: string;
  /** SHA-256, "AB:CD:..." */
  fingerprint: string;
}

/** A self-signed certificate for 127.0.0.1 (EC P-256), made with `openssl req -x509`. */
export async function makeCertificate(commonName = 'bmc-sim'): Promise<SimCertificate> {
  const dir = mkdtempSync(join(tmpdir(), 'mbx-rf-cert-'));
  try {
    await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2',
      '-subj', `/CN=${commonName}/O=metalbox test`, '-addext', 'subjectAltName=IP:127.0.0.1',
    ]);
    const cert = readFileSync(join(dir, 'cert.pem'), 'utf8');
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert, fingerprint: new X509Certificate(cert).fingerprint256 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export const ALL_RESET_TYPES = ['On', 'ForceOff', 'GracefulShutdown', 'GracefulRestart', 'ForceRestart', 'Nmi', 'ForceOn', 'PushPowerButton', 'PowerCycle'] as const;

export interface RedfishSimOptions {
  certificate: SimCertificate;
  username?: string;
  password?: string;
  /** 'enabled': Links.Sessions and login; 'absent': no link, SessionService 404; 'refused': link, but POST -> 405. */
  sessions?: 'enabled' | 'absent' | 'refused';
  /** Whether HTTP Basic is accepted (DSP0266 lets services support both). */
  basic?: boolean;
  /** ResetType values the system accepts. */
  resetTypes?: readonly string[];
  /** How the allowable values are stated: inline annotation, an ActionInfo resource, or not at all. */
  advertise?: 'inline' | 'actionInfo' | 'none';
  powerState?: 'On' | 'Off';
  /** On/ForceOff/GracefulShutdown/PowerCycle pass through PoweringOn/PoweringOff for this long. */
  transitionMs?: number;
  /** Where the identify LED lives. */
  indicator?: 'LocationIndicatorActive' | 'IndicatorLED' | 'chassis' | 'none';
  /** Whether Boot has BootSourceOverrideMode (ComputerSystem v1_1+). */
  bootMode?: boolean;
  bootTargets?: readonly string[];
  /** PATCH without If-Match -> 428 (DSP0266 lets a service require it). */
  requireIfMatch?: boolean;
  /** System ids in the Systems collection; the first is the default. */
  systems?: readonly string[];
}

export interface SimRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** Authorization or X-Auth-Token header, or the password in the body. */
  credentials: boolean;
  auth: 'token' | 'basic' | 'none';
}

export interface SimSystem {
  id: string;
  powerState: 'On' | 'Off' | 'PoweringOn' | 'PoweringOff';
  boot: { BootSourceOverrideEnabled: string; BootSourceOverrideTarget: string; BootSourceOverrideMode: string };
  indicatorLED: string;
  locationIndicatorActive: boolean;
  /** Times the machine started (off -> on, restart, cycle). */
  boots: number;
  /** Every ResetType applied, in order. */
  resets: string[];
  generation: number;
}

interface Canned { status: number; body: string; headers?: Record<string, string> }

const REGISTRY = 'Base.1.18';

function extended(messageId: string, message: string, resolution: string, args: string[] = []) {
  // DSP0266 "Error responses": one `error` object; details in @Message.ExtendedInfo (Message v1_1).
  return {
    error: {
      code: `${REGISTRY}.GeneralError`,
      message: 'A general error has occurred. See Resolution for information on how to resolve the error.',
      '@Message.ExtendedInfo': [{
        '@odata.type': '#Message.v1_1_1.Message',
        MessageId: `${REGISTRY}.${messageId}`,
        Message: message,
        MessageArgs: args,
        MessageSeverity: 'Critical',
        Severity: 'Critical',
        Resolution: resolution,
      }],
    },
  };
}

export class RedfishSim {
  readonly requests: SimRequest[] = [];
  /** Exact "METHOD /path" -> raw answer (for malformed or schema-violating answers). */
  readonly overrides = new Map<string, Canned>();
  /** Exact path -> redirect (any method). */
  readonly redirects = new Map<string, { status: number; location: string }>();
  readonly systems = new Map<string, SimSystem>();
  /** token -> session id */
  readonly sessions = new Map<string, string>();
  /** Session ids created, in order (deleted ones included). */
  readonly sessionLog: { id: string; deleted: boolean }[] = [];
  chassisIndicator = 'Off';
  /** Never answer any request (the TLS handshake still completes). */
  hang = false;
  /** Called with each request after it is recorded and before it is answered. */
  hook: ((request: SimRequest) => void) | undefined;
  /** Every X-Auth-Token handed out (tests search logs for them). */
  readonly issuedTokens: string[] = [];
  connections = 0;
  fingerprint: string;
  port = 0;
  private readonly server: Server;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly opts: Required<Omit<RedfishSimOptions, 'certificate'>>;
  private chassisGeneration = 1;
  /** Every password the account has had (a body carrying any of them carries credentials). */
  private readonly passwords: string[] = [];
  private readonly uuid = randomUUID();

  constructor(options: RedfishSimOptions) {
    this.opts = {
      username: options.username ?? 'admin',
      password: options.password ?? 'password',
      sessions: options.sessions ?? 'enabled',
      basic: options.basic ?? true,
      resetTypes: options.resetTypes ?? ALL_RESET_TYPES,
      advertise: options.advertise ?? 'inline',
      powerState: options.powerState ?? 'Off',
      transitionMs: options.transitionMs ?? 0,
      indicator: options.indicator ?? 'LocationIndicatorActive',
      bootMode: options.bootMode ?? true,
      bootTargets: options.bootTargets ?? ['None', 'Pxe', 'Hdd', 'Cd', 'Usb', 'BiosSetup', 'UefiShell'],
      requireIfMatch: options.requireIfMatch ?? false,
      systems: options.systems ?? ['1'],
    };
    for (const id of this.opts.systems) {
      this.systems.set(id, {
        id, powerState: this.opts.powerState,
        boot: { BootSourceOverrideEnabled: 'Disabled', BootSourceOverrideTarget: 'None', BootSourceOverrideMode: 'UEFI' },
        indicatorLED: 'Off', locationIndicatorActive: false, boots: 0, resets: [], generation: 1,
      });
    }
    this.passwords.push(this.opts.password);
    this.fingerprint = options.certificate.fingerprint;
    this.server = createServer({ key: options.certificate.key, cert: options.certificate.cert }, (req, res) => this.onRequest(req, res));
    this.server.on('secureConnection', () => { this.connections++; });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  /** The first (default) system. */
  get system(): SimSystem {
    return this.systems.get(this.opts.systems[0]!)!;
  }

  /** Serve another certificate from now on and drop every open connection (as a BMC reflash would). */
  setCertificate(certificate: SimCertificate): void {
    this.server.setSecureContext({ key: certificate.key, cert: certificate.cert });
    this.fingerprint = certificate.fingerprint;
    this.server.closeAllConnections();
  }

  /** The account's password changes on the BMC (open sessions stay valid until they expire). */
  setPassword(password: string): void {
    this.opts.password = password;
    this.passwords.push(password);
  }

  /** Session timeout on the service side: every token becomes invalid. */
  expireSessions(): void {
    this.sessions.clear();
  }

  /** Requests that carried credentials (Authorization, X-Auth-Token, or the password in a body). */
  credentialed(): SimRequest[] {
    return this.requests.filter((r) => r.credentials);
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---- HTTP ----

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= 65536) chunks.push(c);
    });
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const url = new URL(req.url ?? '/', 'https://sim.invalid');
      const method = req.method ?? 'GET';
      const auth = this.authOf(req);
      const credentials = req.headers.authorization !== undefined || req.headers['x-auth-token'] !== undefined || this.passwords.some((p) => body.includes(p));
      const record: SimRequest = { method, path: url.pathname, headers: { ...req.headers }, body, credentials, auth: auth.kind };
      this.requests.push(record);
      this.hook?.(record);
      if (this.hang) return;
      try {
        this.route(method, url.pathname, req, res, body, auth.ok);
      } catch (err) {
        this.json(res, 500, extended('InternalError', 'The request failed due to an internal service error.', 'Resubmit the request.', [String(err)]));
      }
    });
  }

  private authOf(req: IncomingMessage): { kind: SimRequest['auth']; ok: boolean } {
    const token = req.headers['x-auth-token'];
    if (typeof token === 'string') return { kind: 'token', ok: this.sessions.has(token) };
    const header = req.headers.authorization;
    if (typeof header === 'string' && header.startsWith('Basic ')) {
      const [user, ...rest] = Buffer.from(header.slice(6), 'base64').toString('utf8').split(':');
      return { kind: 'basic', ok: this.opts.basic && user === this.opts.username && rest.join(':') === this.opts.password };
    }
    return { kind: 'none', ok: false };
  }

  private json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, {
      'OData-Version': '4.0',
      'Cache-Control': 'no-cache',
      ...(text ? { 'Content-Type': 'application/json; charset=utf-8' } : {}),
      'Content-Length': String(Buffer.byteLength(text)),
      ...headers,
    });
    res.end(text);
  }

  private unauthorized(res: ServerResponse, path: string): void {
    this.json(res, 401, extended('NoValidSession', 'There is no valid session established with the implementation.', 'Establish a session before attempting any operations.'), {
      ...(this.opts.basic ? { 'WWW-Authenticate': 'Basic realm="Redfish"' } : {}),
      'X-Sim-Path': path,
    });
  }

  private notFound(res: ServerResponse, path: string): void {
    this.json(res, 404, extended('ResourceNotFound', `The requested resource of type Resource named '${path}' was not found.`, 'Provide a valid resource identifier and resubmit the request.', ['Resource', path]));
  }

  private notAllowed(res: ServerResponse, allow: string): void {
    this.json(res, 405, extended('OperationNotAllowed', 'The HTTP method is not allowed on this resource.', 'None.'), { Allow: allow });
  }

  private route(method: string, rawPath: string, req: IncomingMessage, res: ServerResponse, body: string, authed: boolean): void {
    const canned = this.overrides.get(`${method} ${rawPath}`);
    if (canned) {
      res.writeHead(canned.status, { 'Content-Length': String(Buffer.byteLength(canned.body)), ...canned.headers });
      res.end(canned.body);
      return;
    }
    const redirect = this.redirects.get(rawPath);
    if (redirect) {
      res.writeHead(redirect.status, { 'Location': redirect.location, 'Content-Length': '0' });
      res.end();
      return;
    }
    // DSP0266: a URI with or without a trailing slash names the same resource.
    const path = rawPath.length > 1 ? rawPath.replace(/\/+$/, '') : rawPath;
    const sessionsPath = '/redfish/v1/SessionService/Sessions';

    // Unauthenticated: the version document, the service root, and the session login itself.
    if (path === '/redfish') {
      if (method !== 'GET') return this.notAllowed(res, 'GET');
      return this.json(res, 200, { v1: '/redfish/v1/' });
    }
    if (path === '/redfish/v1') {
      if (method !== 'GET') return this.notAllowed(res, 'GET');
      return this.json(res, 200, this.serviceRoot());
    }
    if (path === sessionsPath && method === 'POST' && this.opts.sessions !== 'absent') {
      if (this.opts.sessions === 'refused') return this.notAllowed(res, 'GET');
      return this.login(res, body);
    }
    if (this.opts.sessions === 'absent' && path.startsWith('/redfish/v1/SessionService')) return this.notFound(res, path);
    if (!authed) return this.unauthorized(res, path);

    if (path === '/redfish/v1/SessionService') {
      return this.json(res, 200, {
        '@odata.id': path, '@odata.type': '#SessionService.v1_1_9.SessionService', Id: 'SessionService', Name: 'Session Service',
        ServiceEnabled: true, SessionTimeout: 1800, Sessions: { '@odata.id': sessionsPath },
      });
    }
    if (path === sessionsPath) {
      if (method !== 'GET') return this.notAllowed(res, 'GET, POST');
      const ids = [...new Set(this.sessions.values())];
      return this.json(res, 200, {
        '@odata.id': path, '@odata.type': '#SessionCollection.SessionCollection', Name: 'Session Collection',
        'Members@odata.count': ids.length, Members: ids.map((id) => ({ '@odata.id': `${sessionsPath}/${id}` })),
      });
    }
    if (path.startsWith(`${sessionsPath}/`)) {
      const id = path.slice(sessionsPath.length + 1);
      const token = [...this.sessions].find(([, sid]) => sid === id)?.[0];
      if (!token) return this.notFound(res, path);
      if (method === 'DELETE') {
        this.sessions.delete(token);
        const entry = this.sessionLog.find((s) => s.id === id);
        if (entry) entry.deleted = true;
        return this.json(res, 204, undefined);
      }
      if (method !== 'GET') return this.notAllowed(res, 'GET, DELETE');
      return this.json(res, 200, this.sessionBody(id));
    }
    if (path === '/redfish/v1/Systems') {
      if (method !== 'GET') return this.notAllowed(res, 'GET');
      return this.json(res, 200, {
        '@odata.id': path, '@odata.type': '#ComputerSystemCollection.ComputerSystemCollection', Name: 'Computer System Collection',
        'Members@odata.count': this.systems.size, Members: [...this.systems.keys()].map((id) => ({ '@odata.id': `/redfish/v1/Systems/${id}` })),
      });
    }
    const m = /^\/redfish\/v1\/Systems\/([^/]+)(\/.*)?$/.exec(path);
    const system = m ? this.systems.get(decodeURIComponent(m[1]!)) : undefined;
    if (m && system) {
      const rest = m[2] ?? '';
      if (rest === '') {
        if (method === 'GET') return this.json(res, 200, this.systemBody(system), { ETag: this.etag(system.generation) });
        if (method === 'PATCH') return this.patchSystem(res, req, system, body);
        return this.notAllowed(res, 'GET, PATCH');
      }
      if (rest === '/ResetActionInfo' && this.opts.advertise === 'actionInfo') {
        if (method !== 'GET') return this.notAllowed(res, 'GET');
        return this.json(res, 200, {
          '@odata.id': path, '@odata.type': '#ActionInfo.v1_4_0.ActionInfo', Id: 'ResetActionInfo', Name: 'Reset Action Info',
          Parameters: [{ Name: 'ResetType', Required: true, DataType: 'String', AllowableValues: [...this.opts.resetTypes] }],
        });
      }
      if (rest === '/Actions/ComputerSystem.Reset') {
        if (method !== 'POST') return this.notAllowed(res, 'POST');
        return this.reset(res, system, body);
      }
      return this.notFound(res, path);
    }
    if (path === '/redfish/v1/Chassis/1') {
      if (method === 'GET') return this.json(res, 200, this.chassisBody(), { ETag: this.etag(this.chassisGeneration) });
      if (method === 'PATCH') return this.patchChassis(res, req, body);
      return this.notAllowed(res, 'GET, PATCH');
    }
    if (path === '/redfish/v1/Managers/bmc') {
      if (method !== 'GET') return this.notAllowed(res, 'GET');
      return this.json(res, 200, {
        '@odata.id': path, '@odata.type': '#Manager.v1_19_0.Manager', Id: 'bmc', Name: 'Simulated BMC', ManagerType: 'BMC',
        FirmwareVersion: 'sim-2.71', Status: { State: 'Enabled', Health: 'OK' },
      });
    }
    return this.notFound(res, path);
  }

  // ---- Resources (DSP0268) ----

  private serviceRoot(): unknown {
    return {
      '@odata.id': '/redfish/v1/', '@odata.type': '#ServiceRoot.v1_16_0.ServiceRoot', Id: 'RootService', Name: 'Root Service',
      RedfishVersion: '1.17.0', UUID: this.uuid, Vendor: 'metalbox', Product: 'Redfish simulator',
      Systems: { '@odata.id': '/redfish/v1/Systems' },
      Chassis: { '@odata.id': '/redfish/v1/Chassis' },
      Managers: { '@odata.id': '/redfish/v1/Managers' },
      ...(this.opts.sessions !== 'absent' ? { SessionService: { '@odata.id': '/redfish/v1/SessionService' } } : {}),
      Links: this.opts.sessions !== 'absent' ? { Sessions: { '@odata.id': '/redfish/v1/SessionService/Sessions' } } : {},
    };
  }

  private sessionBody(id: string): unknown {
    return {
      '@odata.id': `/redfish/v1/SessionService/Sessions/${id}`, '@odata.type': '#Session.v1_7_0.Session',
      Id: id, Name: 'User Session', UserName: this.opts.username,
    };
  }

  private etag(generation: number): string {
    return `W/"${generation.toString(16).padStart(8, '0')}"`;
  }

  private systemBody(s: SimSystem): unknown {
    const reset: Record<string, unknown> = { target: `/redfish/v1/Systems/${s.id}/Actions/ComputerSystem.Reset` };
    if (this.opts.advertise === 'inline') reset['ResetType@Redfish.AllowableValues'] = [...this.opts.resetTypes];
    if (this.opts.advertise === 'actionInfo') reset['@Redfish.ActionInfo'] = `/redfish/v1/Systems/${s.id}/ResetActionInfo`;
    const boot: Record<string, unknown> = {
      BootSourceOverrideEnabled: s.boot.BootSourceOverrideEnabled,
      'BootSourceOverrideEnabled@Redfish.AllowableValues': ['Disabled', 'Once', 'Continuous'],
      BootSourceOverrideTarget: s.boot.BootSourceOverrideTarget,
      'BootSourceOverrideTarget@Redfish.AllowableValues': [...this.opts.bootTargets],
    };
    if (this.opts.bootMode) {
      boot.BootSourceOverrideMode = s.boot.BootSourceOverrideMode;
      boot['BootSourceOverrideMode@Redfish.AllowableValues'] = ['Legacy', 'UEFI'];
    }
    return {
      '@odata.id': `/redfish/v1/Systems/${s.id}`, '@odata.type': '#ComputerSystem.v1_20_0.ComputerSystem', '@odata.etag': this.etag(s.generation),
      Id: s.id, Name: `Simulated system ${s.id}`, SystemType: 'Physical',
      Manufacturer: 'Metalbox Labs', Model: 'RF-Sim 1', SerialNumber: `SIM-${s.id}`, BiosVersion: 'SIMBIOS 1.2.3',
      UUID: '8B3C6A52-2F0E-4C7B-9D55-0A1B2C3D4E5F',
      PowerState: s.powerState,
      Status: { State: 'Enabled', Health: 'OK' },
      ...(this.opts.indicator === 'LocationIndicatorActive' ? { LocationIndicatorActive: s.locationIndicatorActive } : {}),
      ...(this.opts.indicator === 'IndicatorLED' ? { IndicatorLED: s.indicatorLED } : {}),
      Boot: boot,
      Actions: { '#ComputerSystem.Reset': reset },
      Links: { Chassis: [{ '@odata.id': '/redfish/v1/Chassis/1' }], ManagedBy: [{ '@odata.id': '/redfish/v1/Managers/bmc' }] },
    };
  }

  private chassisBody(): unknown {
    return {
      '@odata.id': '/redfish/v1/Chassis/1', '@odata.type': '#Chassis.v1_14_0.Chassis', '@odata.etag': this.etag(this.chassisGeneration),
      Id: '1', Name: 'Simulated chassis', ChassisType: 'RackMount',
      ...(this.opts.indicator === 'chassis' ? { IndicatorLED: this.chassisIndicator } : {}),
    };
  }

  // ---- Operations ----

  private login(res: ServerResponse, body: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return this.json(res, 400, extended('MalformedJSON', 'The request body submitted was malformed JSON and could not be parsed by the receiving service.', 'Ensure that the request body is valid JSON and resubmit the request.'));
    }
    const p = parsed as { UserName?: unknown; Password?: unknown };
    if (p.UserName !== this.opts.username || p.Password !== this.opts.password) {
      const path = '/redfish/v1/SessionService/Sessions';
      return this.json(res, 401, extended('ResourceAtUriUnauthorized', `While accessing the resource at '${path}', the service received an authorization error 'invalid user name or password'.`,
        'Ensure that the appropriate access is provided for the service in order for it to access the URI.', [path, 'invalid user name or password']));
    }
    const token = randomBytes(24).toString('hex');
    const id = String(this.sessionLog.length + 1);
    this.sessions.set(token, id);
    this.issuedTokens.push(token);
    this.sessionLog.push({ id, deleted: false });
    const location = `/redfish/v1/SessionService/Sessions/${id}`;
    this.json(res, 201, this.sessionBody(id), { 'X-Auth-Token': token, 'Location': location });
  }

  private checkIfMatch(res: ServerResponse, req: IncomingMessage, generation: number): boolean {
    const ifMatch = req.headers['if-match'];
    if (ifMatch === undefined) {
      if (!this.opts.requireIfMatch) return true;
      this.json(res, 428, extended('PreconditionRequired', 'A precondition header or annotation is required to change this resource.', 'Try the request again with the If-Match header.'));
      return false;
    }
    if (ifMatch === '*' || ifMatch.split(',').map((s) => s.trim()).includes(this.etag(generation))) return true;
    this.json(res, 412, extended('PreconditionFailed', 'The ETag supplied did not match the ETag required to change this resource.', 'Try the operation again using the appropriate ETag.'));
    return false;
  }

  private parseBody(res: ServerResponse, body: string): Record<string, unknown> | undefined {
    try {
      const v = JSON.parse(body) as unknown;
      if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
    } catch {
      // answered below
    }
    this.json(res, 400, extended('MalformedJSON', 'The request body submitted was malformed JSON and could not be parsed by the receiving service.', 'Ensure that the request body is valid JSON and resubmit the request.'));
    return undefined;
  }

  private propertyError(res: ServerResponse, property: string, value: unknown): void {
    this.json(res, 400, extended('PropertyValueNotInList', `The value '${String(value)}' for the property ${property} is not in the list of acceptable values.`,
      'Choose a value from the enumeration list that the implementation can support and resubmit the request if the operation failed.', [String(value), property]));
  }

  private patchSystem(res: ServerResponse, req: IncomingMessage, s: SimSystem, body: string): void {
    if (!this.checkIfMatch(res, req, s.generation)) return;
    const patch = this.parseBody(res, body);
    if (!patch) return;
    const next = { ...s.boot };
    let led = s.indicatorLED;
    let lia = s.locationIndicatorActive;
    for (const [key, value] of Object.entries(patch)) {
      if (key === 'Boot' && typeof value === 'object' && value !== null) {
        for (const [bk, bv] of Object.entries(value as Record<string, unknown>)) {
          const allowed: Record<string, readonly string[]> = {
            BootSourceOverrideTarget: this.opts.bootTargets,
            BootSourceOverrideEnabled: ['Disabled', 'Once', 'Continuous'],
            ...(this.opts.bootMode ? { BootSourceOverrideMode: ['Legacy', 'UEFI'] } : {}),
          };
          if (!(bk in allowed)) return this.unknownProperty(res, `Boot/${bk}`);
          if (typeof bv !== 'string' || !allowed[bk]!.includes(bv)) return this.propertyError(res, `Boot/${bk}`, bv);
          next[bk as keyof SimSystem['boot']] = bv;
        }
      } else if (key === 'IndicatorLED' && this.opts.indicator === 'IndicatorLED') {
        if (value !== 'Lit' && value !== 'Blinking' && value !== 'Off') return this.propertyError(res, key, value);
        led = value;
      } else if (key === 'LocationIndicatorActive' && this.opts.indicator === 'LocationIndicatorActive') {
        if (typeof value !== 'boolean') return this.propertyError(res, key, value);
        lia = value;
      } else {
        return this.unknownProperty(res, key);
      }
    }
    s.boot = next;
    s.indicatorLED = led;
    s.locationIndicatorActive = lia;
    s.generation++;
    this.json(res, 204, undefined);
  }

  private patchChassis(res: ServerResponse, req: IncomingMessage, body: string): void {
    if (!this.checkIfMatch(res, req, this.chassisGeneration)) return;
    const patch = this.parseBody(res, body);
    if (!patch) return;
    for (const [key, value] of Object.entries(patch)) {
      if (key !== 'IndicatorLED' || this.opts.indicator !== 'chassis') return this.unknownProperty(res, key);
      if (value !== 'Lit' && value !== 'Blinking' && value !== 'Off') return this.propertyError(res, key, value);
      this.chassisIndicator = value;
    }
    this.chassisGeneration++;
    this.json(res, 204, undefined);
  }

  private unknownProperty(res: ServerResponse, property: string): void {
    this.json(res, 400, extended('PropertyUnknown', `The property ${property} is not in the list of valid properties for the resource.`,
      'Remove the unknown property from the request body and resubmit the request if the operation failed.', [property]));
  }

  private reset(res: ServerResponse, s: SimSystem, body: string): void {
    const parsed = this.parseBody(res, body);
    if (!parsed) return;
    const type = parsed.ResetType;
    const action = 'ComputerSystem.Reset';
    if (type === undefined) {
      return this.json(res, 400, extended('ActionParameterMissing', `The action ${action} requires the parameter ResetType to be present in the request body.`,
        'Supply the action with the required parameter in the request body when the request is resubmitted.', [action, 'ResetType']));
    }
    if (typeof type !== 'string' || !this.opts.resetTypes.includes(type)) {
      return this.json(res, 400, extended('ActionParameterValueNotInList', `The value '${String(type)}' for the parameter ResetType in the action ${action} is not in the list of acceptable values.`,
        'Choose a value from the enumeration list that the implementation can support and resubmit the request if the operation failed.', [String(type), 'ResetType', action]));
    }
    const on = s.powerState === 'On' || s.powerState === 'PoweringOn';
    switch (type) {
      case 'On': case 'ForceOn':
        // DSP0268: On turns the unit on; a unit already on stays as it is (no reset).
        if (!on) this.transition(s, 'PoweringOn', 'On', true);
        break;
      case 'ForceOff':
        if (s.powerState !== 'Off') this.transition(s, 'PoweringOff', 'Off', false);
        break;
      case 'GracefulShutdown':
        if (on) this.transition(s, 'PoweringOff', 'Off', false);
        break;
      case 'ForceRestart': case 'GracefulRestart':
        if (!on) {
          return this.json(res, 409, extended('ResourceInStandby', 'The request could not be performed because the resource is in standby.',
            'Ensure that the resource is in the correct power state and resubmit the request.'));
        }
        s.boots++;
        break;
      case 'PowerCycle':
        // A full power removal followed by a power restore: whatever the state, it ends On and booted.
        this.transition(s, 'PoweringOn', 'On', true);
        break;
      case 'PushPowerButton':
        if (on) this.transition(s, 'PoweringOff', 'Off', false);
        else this.transition(s, 'PoweringOn', 'On', true);
        break;
      default: // Nmi and the rest: accepted, nothing visible
        break;
    }
    s.resets.push(type);
    s.generation++;
    this.json(res, 204, undefined);
  }

  private transition(s: SimSystem, via: SimSystem['powerState'], to: 'On' | 'Off', boots: boolean): void {
    if (boots) s.boots++;
    if (this.opts.transitionMs <= 0) {
      s.powerState = to;
      return;
    }
    s.powerState = via;
    const t = setTimeout(() => {
      this.timers.delete(t);
      s.powerState = to;
      s.generation++;
    }, this.opts.transitionMs);
    this.timers.add(t);
  }
}

export async function startRedfishSim(options: RedfishSimOptions): Promise<RedfishSim> {
  return new RedfishSim(options).start();
}
