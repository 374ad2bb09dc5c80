// The Redfish BMC driver (DSP0266 protocol, DSP0268 schemas). One driver talks to one service:
//   GET /redfish/v1/ (unauthenticated) -> Links.Sessions -> POST a session (X-Auth-Token; its Location is
//   DELETEd on close), or HTTP Basic when the service offers no sessions (no link, 404/405/501) ->
//   Systems collection -> the system (endpoint.systemId or the first member) -> PowerState,
//   Actions #ComputerSystem.Reset, Boot, IndicatorLED / LocationIndicatorActive.
// A token the service dropped (401 in the middle of a session) is replaced by one new login, once per call.
// TLS and its pinning live in transport.ts. Neither the password nor the token ever reaches a log line, a
// message or `details`; text the BMC sends back is scrubbed of both before it is shown.
import { setTimeout as sleep } from 'node:timers/promises';
import { MetalboxError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { POWER_ACTIONS, type BmcDriver, type BmcEndpoint, type BmcInfo, type BootDeviceRequest, type PowerAction, type PowerState } from '../types.ts';
import {
  allowableFromActionInfo, bootPatch, indicatorPatch, isObject, meansUnsupported, memberMatches, normalizeFingerprint,
  optLink, optString, parseJsonObject, planReset, powerStateOf, readCollection, readExtendedError, readResetAction,
  readServiceRoot, type JsonObject, type ServiceRoot,
} from './model.ts';
import { fetchFingerprint, networkError, RedfishTransport, type CertificateInfo, type HttpAnswer } from './transport.ts';

export interface RedfishDriverOptions {
  logger?: Logger;
  /** Bound on each HTTP exchange with the BMC, TLS handshake included (default 10 s). */
  timeoutMs?: number;
  /** Redirects followed per request, same origin only (default 5). */
  maxRedirects?: number;
  /** Cycle without PowerCycle: how often to read PowerState while waiting for Off (default 1 s). */
  cyclePollMs?: number;
  /** Cycle without PowerCycle: how long the system may take to reach Off (default 60 s). */
  cycleOffTimeoutMs?: number;
  /** Cycle without PowerCycle: time spent off before On (default 1 s, like IPMI's power cycle interval). */
  cycleOffMs?: number;
}

type Auth =
  | { kind: 'session'; token: string; location?: string }
  | { kind: 'basic'; header: string };

interface Resource {
  /** Where to PATCH it: its @odata.id, else the path that answered. */
  path: string;
  body: JsonObject;
  /** ETag header, else @odata.etag (DSP0266 "ETags"), for If-Match on PATCH. */
  etag?: string;
}

const IDENTIFY_MAX_SECONDS = 2_147_483; // setTimeout's limit; longer means "until turned off"

/** Trust on first use: the certificate to show the operator, and what the service says it is. */
export interface RedfishProbe {
  certificate: CertificateInfo;
  service: { redfishVersion?: string; uuid?: string; vendor?: string; product?: string };
}

/**
 * Reads the BMC's certificate (nothing is sent before the handshake ends) and then, over a connection
 * pinned to exactly that certificate, the unauthenticated service root. No credentials are involved.
 */
export async function probeRedfish(address: string, port = 443, options: { timeoutMs?: number; signal?: AbortSignal; logger?: Logger } = {}): Promise<RedfishProbe> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const certificate = await fetchFingerprint(address, port, { timeoutMs, signal: options.signal });
  const transport = new RedfishTransport({ host: address, port, fingerprint: certificate.fingerprint, timeoutMs, maxRedirects: 5, logger: options.logger });
  try {
    const answer = await transport.request('GET', '/redfish/v1/', { signal: options.signal, idempotent: true });
    if (answer.status !== 200) throw new MetalboxError('BMC_PROTOCOL', `${transport.where}: GET /redfish/v1/: HTTP ${answer.status}; not a Redfish service?`, { details: { status: answer.status } });
    const root = readServiceRoot(parseJsonObject(answer.body, `${transport.where}: GET /redfish/v1/`));
    return { certificate, service: { redfishVersion: root.redfishVersion, uuid: root.uuid, vendor: root.vendor, product: root.product } };
  } finally {
    transport.close();
  }
}

export function createRedfishDriver(endpoint: BmcEndpoint, options: RedfishDriverOptions = {}): BmcDriver {
  return new RedfishDriver(endpoint, options);
}

class RedfishDriver implements BmcDriver {
  readonly kind = 'redfish';
  private readonly transport: RedfishTransport;
  private readonly log: Logger | undefined;
  private readonly username: string;
  private readonly password: string;
  private rootPromise: Promise<ServiceRoot> | undefined;
  private session: { promise: Promise<Auth>; value?: Auth } | undefined;
  private systemPath: string | undefined;
  private identifyTimer: NodeJS.Timeout | undefined;

  constructor(private readonly endpoint: BmcEndpoint, private readonly options: RedfishDriverOptions) {
    if (!endpoint.address) throw new MetalboxError('BMC_INVALID', 'a Redfish BMC needs an address');
    const port = endpoint.port ?? 443;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new MetalboxError('BMC_INVALID', `Redfish port ${port} is not a TCP port`);
    if (!endpoint.username || endpoint.password === undefined) throw new MetalboxError('BMC_INVALID', `Redfish BMC ${endpoint.address} needs a username and a password`);
    let fingerprint: string | undefined;
    if (endpoint.tlsFingerprint !== undefined) {
      fingerprint = normalizeFingerprint(endpoint.tlsFingerprint);
      // The fingerprint is not a secret; showing the bad value helps fix the record.
      if (!fingerprint) throw new MetalboxError('BMC_INVALID', `Redfish BMC ${endpoint.address}: "${endpoint.tlsFingerprint.slice(0, 120)}" is not a SHA-256 fingerprint (AB:CD:... 32 bytes)`);
    }
    this.username = endpoint.username;
    this.password = endpoint.password;
    this.log = options.logger?.child({ driver: 'redfish', bmc: `${endpoint.address}:${port}` });
    this.transport = new RedfishTransport({
      host: endpoint.address, port, fingerprint,
      timeoutMs: options.timeoutMs ?? 10_000,
      maxRedirects: options.maxRedirects ?? 5,
      logger: this.log,
    });
  }

  // ---- BmcDriver ----

  async powerStatus(signal?: AbortSignal): Promise<PowerState> {
    return powerStateOf((await this.system(signal)).body);
  }

  async power(action: PowerAction, signal?: AbortSignal): Promise<void> {
    if (!POWER_ACTIONS.includes(action)) throw new TypeError(`unknown power action ${String(action)}`);
    const system = await this.system(signal);
    const reset = readResetAction(system.body);
    if (!reset) throw new MetalboxError('BMC_UNSUPPORTED', `${this.transport.where}: the system offers no ComputerSystem.Reset action`);
    let allowable = reset.allowable;
    if (allowable === undefined && reset.actionInfo) allowable = await this.actionInfoValues(reset.actionInfo, signal);
    const plan = planReset(action, allowable);
    if (!plan) {
      throw new MetalboxError('BMC_UNSUPPORTED', `${this.transport.where}: power ${action}: the system offers ResetType ${allowable?.join(', ') || 'none'}, none of which does that`, {
        details: { action, allowable },
      });
    }
    if (plan.kind === 'single') {
      await this.reset(reset.target, plan.resetType, signal);
      this.log?.info({ action, resetType: plan.resetType }, 'redfish power action sent');
      return;
    }
    // Cycle without PowerCycle: power really goes away, then comes back. An Off system only gets On.
    if (powerStateOf(system.body) !== 'off') {
      await this.reset(reset.target, plan.off, signal);
      await this.waitForOff(signal);
      await this.pause(this.options.cycleOffMs ?? 1000, signal);
    }
    await this.reset(reset.target, plan.on, signal);
    this.log?.info({ action, resetType: `${plan.off}+${plan.on}` }, 'redfish power action sent');
  }

  async setBootDevice(request: BootDeviceRequest, signal?: AbortSignal): Promise<void> {
    await this.patchWithRetry(await this.system(signal), () => this.system(signal), (system) => bootPatch(system.body, request), signal);
    this.log?.info({ device: request.device, persistent: request.persistent, efi: request.efi }, 'redfish boot override set');
  }

  async identify(seconds: number, signal?: AbortSignal): Promise<void> {
    if (this.identifyTimer) clearTimeout(this.identifyTimer);
    this.identifyTimer = undefined;
    const on = Number.isFinite(seconds) ? seconds > 0 : seconds === Infinity;
    await this.setIndicator(on, signal);
    // Redfish has no identify interval (IPMI's Chassis Identify has one): turn it off ourselves.
    if (on && seconds < IDENTIFY_MAX_SECONDS) {
      this.identifyTimer = setTimeout(() => {
        this.identifyTimer = undefined;
        this.setIndicator(false).catch((err: unknown) => this.log?.warn({ code: (err as MetalboxError).code, err: (err as Error).message }, 'redfish identify off failed'));
      }, seconds * 1000);
      this.identifyTimer.unref();
    }
  }

  async info(signal?: AbortSignal): Promise<BmcInfo> {
    const root = await this.root(signal);
    const system = await this.system(signal);
    const what = 'ComputerSystem';
    const biosVersion = optString(system.body, 'BiosVersion', what);
    let managerFirmware: string | undefined;
    const links = system.body.Links;
    const managedBy = isObject(links) && Array.isArray(links.ManagedBy) ? links.ManagedBy[0] : undefined;
    if (isObject(managedBy) && typeof managedBy['@odata.id'] === 'string') {
      try {
        managerFirmware = optString((await this.getResource(managedBy['@odata.id'], signal)).body, 'FirmwareVersion', 'Manager');
      } catch (err) {
        // The BMC's own firmware version is a nicety (an account may not be allowed to read the Manager):
        // the system facts stand without it. Only a BMC that stopped answering fails the call.
        if (!(err instanceof MetalboxError) || ['BMC_TIMEOUT', 'BMC_UNREACHABLE', 'BMC_TLS_MISMATCH'].includes(err.code)) throw err;
        this.log?.debug({ code: err.code }, 'redfish manager not readable');
      }
    }
    return {
      manufacturer: optString(system.body, 'Manufacturer', what),
      model: optString(system.body, 'Model', what),
      firmwareVersion: managerFirmware ?? biosVersion,
      protocolVersion: root.redfishVersion,
      systemUuid: optString(system.body, 'UUID', what)?.toLowerCase(),
      biosVersion,
      serialNumber: optString(system.body, 'SerialNumber', what),
      systemId: optString(system.body, 'Id', what),
      systemPath: system.path,
      powerState: optString(system.body, 'PowerState', what),
      serviceUuid: root.uuid,
      vendor: root.vendor,
      product: root.product,
      authentication: this.session?.value?.kind,
    };
  }

  async close(): Promise<void> {
    if (this.identifyTimer) clearTimeout(this.identifyTimer);
    this.identifyTimer = undefined;
    const session = this.session;
    this.session = undefined;
    this.rootPromise = undefined;
    this.systemPath = undefined;
    const auth = session ? await session.promise.catch(() => undefined) : undefined;
    if (auth?.kind === 'session' && auth.location) {
      // DSP0266 "Session termination": DELETE the session resource. Best effort: the BMC expires it anyway.
      try {
        const answer = await this.transport.request('DELETE', auth.location, {
          headers: { 'X-Auth-Token': auth.token },
          signal: AbortSignal.timeout(Math.min(this.options.timeoutMs ?? 10_000, 5000)),
          idempotent: true,
        });
        this.log?.debug({ status: answer.status }, 'redfish session closed');
      } catch (err) {
        this.log?.debug({ code: (err as MetalboxError).code }, 'redfish session close failed');
      }
    }
    this.transport.close();
  }

  // ---- Service root, authentication ----

  private root(signal: AbortSignal | undefined): Promise<ServiceRoot> {
    if (!this.rootPromise) {
      const p = (async () => {
        // DSP0266: the service root is readable without authentication.
        const answer = await this.transport.request('GET', '/redfish/v1/', { signal, idempotent: true });
        if (answer.status !== 200) throw this.answerError(answer, 'GET');
        return readServiceRoot(parseJsonObject(answer.body, `${this.transport.where}: GET ${answer.path}`));
      })();
      this.rootPromise = p;
      p.catch(() => { if (this.rootPromise === p) this.rootPromise = undefined; });
    }
    return this.rootPromise;
  }

  private authorize(signal: AbortSignal | undefined): Promise<Auth> {
    if (!this.session) {
      const entry: { promise: Promise<Auth>; value?: Auth } = { promise: this.login(signal) };
      this.session = entry;
      entry.promise.then((auth) => { entry.value = auth; }, () => { if (this.session === entry) this.session = undefined; });
    }
    return this.session.promise;
  }

  /** Drops `auth` if it is still the current one (a concurrent call may already have logged in again). */
  private forget(auth: Auth): void {
    if (this.session?.value === auth) this.session = undefined;
  }

  private async login(signal: AbortSignal | undefined): Promise<Auth> {
    const root = await this.root(signal);
    if (root.sessions) {
      // DSP0266 "Session login authentication": POST UserName/Password to the Sessions collection without
      // credentials; the token comes back in X-Auth-Token, the session's URI in Location.
      const answer = await this.transport.request('POST', root.sessions, {
        body: { UserName: this.username, Password: this.password },
        signal,
        idempotent: true,
      });
      if (answer.status === 401 || answer.status === 403) throw this.authFailed(answer, 'session login');
      if (answer.status >= 200 && answer.status < 300) {
        const token = header(answer, 'x-auth-token');
        if (token) {
          const auth: Auth = { kind: 'session', token, location: this.sessionLocation(answer) };
          this.log?.debug({ auth: 'session' }, 'redfish session opened');
          return auth;
        }
        // QUIRK(bmc): a 2xx login without X-Auth-Token gives nothing to authenticate with; use Basic.
        this.log?.info({ status: answer.status }, 'redfish session login returned no token; using HTTP Basic');
      } else if (answer.status === 404 || answer.status === 405 || answer.status === 501) {
        this.log?.info({ status: answer.status }, 'redfish service offers no sessions; using HTTP Basic');
      } else {
        throw this.answerError(answer, 'POST');
      }
    } else {
      this.log?.info('redfish service root has no Links.Sessions; using HTTP Basic');
    }
    // DSP0266 "HTTP Basic authentication" (RFC 7617); checked by the first request that uses it.
    return { kind: 'basic', header: `Basic ${Buffer.from(`${this.username}:${this.password}`, 'utf8').toString('base64')}` };
  }

  private sessionLocation(answer: HttpAnswer): string | undefined {
    const location = header(answer, 'location');
    if (location) {
      try {
        const url = new URL(location, 'https://bmc.invalid');
        return url.pathname + url.search;
      } catch {
        // fall back to the body's @odata.id
      }
    }
    try {
      return optString(parseJsonObject(answer.body, 'session'), '@odata.id', 'Session');
    } catch {
      return undefined;
    }
  }

  /** An authenticated request; a session the BMC dropped is replaced once. 401/403 -> BMC_AUTH_FAILED. */
  private async call(method: string, path: string, opts: { body?: unknown; signal?: AbortSignal | undefined; idempotent?: boolean; ifMatch?: string } = {}): Promise<HttpAnswer> {
    let auth = await this.authorize(opts.signal);
    const send = (a: Auth) => this.transport.request(method, path, {
      headers: { ...authHeader(a), ...(opts.ifMatch ? { 'If-Match': opts.ifMatch } : {}) },
      body: opts.body,
      signal: opts.signal,
      idempotent: opts.idempotent,
    });
    let answer = await send(auth);
    if (answer.status === 401 && auth.kind === 'session') {
      // The token expired or the BMC restarted its session table; a 401 means nothing was done.
      this.log?.info({ method, path }, 'redfish session no longer valid; logging in again');
      this.forget(auth);
      auth = await this.authorize(opts.signal);
      answer = await send(auth);
    }
    if (answer.status === 401 || answer.status === 403) throw this.authFailed(answer, `${method} ${path}`);
    return answer;
  }

  // ---- Resources ----

  private async getResource(path: string, signal: AbortSignal | undefined): Promise<Resource> {
    const answer = await this.call('GET', path, { signal, idempotent: true });
    if (answer.status !== 200) throw this.answerError(answer, 'GET');
    const body = parseJsonObject(answer.body, `${this.transport.where}: GET ${answer.path}`);
    const id = optString(body, '@odata.id', answer.path);
    return {
      path: id?.startsWith('/') ? id : answer.path,
      body,
      etag: header(answer, 'etag') ?? optString(body, '@odata.etag', answer.path),
    };
  }

  private async system(signal: AbortSignal | undefined): Promise<Resource> {
    this.systemPath ??= await this.findSystem(signal);
    return this.getResource(this.systemPath, signal);
  }

  private async findSystem(signal: AbortSignal | undefined): Promise<string> {
    const root = await this.root(signal);
    const wanted = this.endpoint.systemId;
    const seen: string[] = [];
    let page: string | undefined = root.systems;
    // Members@odata.nextLink pages (DSP0266 "Collections"); bounded against a looping service.
    for (let n = 0; page !== undefined && n < 32; n++) {
      const { body } = await this.getResource(page, signal);
      const collection = readCollection(body, 'Systems collection');
      const hit = wanted === undefined ? collection.members[0] : collection.members.find((m) => memberMatches(m, wanted));
      if (hit) {
        this.log?.debug({ system: hit }, 'redfish system found');
        return hit;
      }
      seen.push(...collection.members);
      page = collection.next;
    }
    if (wanted === undefined) throw new MetalboxError('BMC_PROTOCOL', `${this.transport.where}: the Systems collection is empty`);
    throw new MetalboxError('BMC_INVALID', `${this.transport.where}: no system "${wanted}"; the service has ${seen.join(', ') || 'none'}`, { details: { systemId: wanted, systems: seen.slice(0, 16) } });
  }

  private async actionInfoValues(path: string, signal: AbortSignal | undefined): Promise<string[] | undefined> {
    try {
      return allowableFromActionInfo((await this.getResource(path, signal)).body);
    } catch (err) {
      // QUIRK(bmc): an ActionInfo link that cannot be read; go on as if no values were stated.
      if (!(err instanceof MetalboxError) || err.code !== 'BMC_PROTOCOL') throw err;
      this.log?.debug({ path }, 'redfish ActionInfo not readable');
      return undefined;
    }
  }

  private async reset(target: string, resetType: string, signal: AbortSignal | undefined): Promise<void> {
    // DSP0266 "POST (action)": 200 with a message, 202 with a task, or 204.
    const answer = await this.call('POST', target, { body: { ResetType: resetType }, signal, idempotent: false });
    if (answer.status < 200 || answer.status >= 300) throw this.answerError(answer, 'POST', `ResetType ${resetType}`);
  }

  private async waitForOff(signal: AbortSignal | undefined): Promise<void> {
    const limit = this.options.cycleOffTimeoutMs ?? 60_000;
    const deadline = performance.now() + limit;
    for (;;) {
      if (powerStateOf((await this.system(signal)).body) === 'off') return;
      if (performance.now() >= deadline) {
        throw new MetalboxError('BMC_TIMEOUT', `${this.transport.where}: power cycle: the system did not reach Off within ${limit} ms after ForceOff`, { details: { reason: 'timeout' } });
      }
      await this.pause(this.options.cyclePollMs ?? 1000, signal);
    }
  }

  private async pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
    try {
      await sleep(ms, undefined, { signal });
    } catch (err) {
      throw networkError(err, this.transport.where, true);
    }
  }

  /** PATCHes with If-Match (DSP0266 "ETags"); a 412 (changed in between) reads again and tries once more. */
  private async patchWithRetry(first: Resource, read: () => Promise<Resource>, build: (r: Resource) => JsonObject, signal: AbortSignal | undefined): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const resource = attempt === 0 ? first : await read();
      const patch = build(resource);
      const answer = await this.call('PATCH', resource.path, { body: patch, signal, idempotent: true, ifMatch: resource.etag });
      if (answer.status === 412 && attempt === 0) {
        this.log?.debug({ path: resource.path }, 'redfish ETag changed; reading again');
        continue;
      }
      if (answer.status < 200 || answer.status >= 300) throw this.answerError(answer, 'PATCH');
      return;
    }
  }

  private async setIndicator(on: boolean, signal?: AbortSignal): Promise<void> {
    const system = await this.system(signal);
    if (indicatorPatch(system.body, on)) {
      await this.patchWithRetry(system, () => this.system(signal), (r) => indicatorPatch(r.body, on) ?? {}, signal);
      return;
    }
    // Older services keep the LED on the chassis only (ComputerSystem Links.Chassis).
    const links = system.body.Links;
    const chassis = isObject(links) && Array.isArray(links.Chassis) && isObject(links.Chassis[0]) ? optLink({ c: links.Chassis[0] }, 'c', 'ComputerSystem Links.Chassis') : undefined;
    if (chassis) {
      const first = await this.getResource(chassis, signal);
      if (indicatorPatch(first.body, on)) {
        await this.patchWithRetry(first, () => this.getResource(chassis, signal), (r) => indicatorPatch(r.body, on) ?? {}, signal);
        return;
      }
    }
    throw new MetalboxError('BMC_UNSUPPORTED', `${this.transport.where}: neither the system nor its chassis has an indicator LED (IndicatorLED, LocationIndicatorActive)`);
  }

  // ---- Errors ----

  /** Removes the password and the current token from text the BMC sent back, before anyone sees it. */
  private scrub(text: string): string {
    let out = text;
    const token = this.session?.value?.kind === 'session' ? this.session.value.token : undefined;
    for (const secret of [this.password, token]) {
      if (secret) out = out.split(secret).join('[redacted]');
    }
    return out;
  }

  private answerError(answer: HttpAnswer, method: string, doing?: string): MetalboxError {
    const ext = readExtendedError(answer.body);
    const text = ext.text ? `: ${this.scrub(ext.text)}` : '';
    const message = `${this.transport.where}: ${method} ${answer.path}${doing ? ` (${doing})` : ''}: HTTP ${answer.status}${text}`;
    const details = { status: answer.status, messageIds: ext.messageIds.map((id) => this.scrub(id)) };
    const unsupported = answer.status === 405 || answer.status === 501 || (answer.status === 400 && meansUnsupported(ext.messageIds));
    return new MetalboxError(unsupported ? 'BMC_UNSUPPORTED' : 'BMC_PROTOCOL', message, { details });
  }

  private authFailed(answer: HttpAnswer, doing: string): MetalboxError {
    const ext = readExtendedError(answer.body);
    const text = ext.text ? `: ${this.scrub(ext.text)}` : '';
    return new MetalboxError('BMC_AUTH_FAILED',
      `${this.transport.where}: ${doing} as "${this.scrub(this.username)}" refused (HTTP ${answer.status})${text}`,
      { details: { status: answer.status, messageIds: ext.messageIds.map((id) => this.scrub(id)) } });
  }
}

function header(answer: HttpAnswer, name: string): string | undefined {
  const v = answer.headers[name];
  const s = Array.isArray(v) ? v[0] : v;
  return s === undefined || s === '' ? undefined : s;
}

function authHeader(auth: Auth): Record<string, string> {
  return auth.kind === 'session' ? { 'X-Auth-Token': auth.token } : { Authorization: auth.header };
}
