// The Redfish data model as this driver reads it: pure functions over parsed JSON, no sockets, no clock.
// Sources: DSP0266 (the Redfish protocol: service root, sessions, actions, ETags, error responses) and
// DSP0268 / the DMTF JSON schemas (ServiceRoot, ComputerSystemCollection, ComputerSystem, ActionInfo,
// Resource.ResetType). Anything a BMC sends that does not fit the schema where we depend on it becomes
// MetalboxError BMC_PROTOCOL; properties we do not use are ignored (services add OEM properties freely).
import { MetalboxError } from '../../lib/errors.ts';
import type { BootDeviceRequest, PowerAction, PowerState } from '../types.ts';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The body of a 2xx answer as a JSON object (every Redfish resource is one). */
export function parseJsonObject(body: Buffer, what: string): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new MetalboxError('BMC_PROTOCOL', `${what}: the answer is not JSON (${body.length} bytes)`);
  }
  if (!isObject(value)) throw new MetalboxError('BMC_PROTOCOL', `${what}: the answer is not a JSON object`);
  return value;
}

function violation(what: string, key: string, expected: string): MetalboxError {
  return new MetalboxError('BMC_PROTOCOL', `${what}: "${key}" is not ${expected}`);
}

/** An optional string property; null counts as absent (DSP0266: properties may be null when unknown). */
export function optString(obj: JsonObject, key: string, what: string): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw violation(what, key, 'a string');
  return v;
}

/** A navigation link `{ "@odata.id": "/redfish/v1/..." }` (DSP0266 "Reference properties"). */
export function optLink(obj: JsonObject, key: string, what: string): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (!isObject(v) || typeof v['@odata.id'] !== 'string' || !v['@odata.id'].startsWith('/')) {
    throw violation(what, key, 'a link with an absolute "@odata.id"');
  }
  return v['@odata.id'];
}

/** An optional array of strings (AllowableValues annotations); non-strings inside are dropped. */
export function optStringArray(obj: JsonObject, key: string, what: string): string[] | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw violation(what, key, 'an array');
  return v.filter((x): x is string => typeof x === 'string');
}

// ---- Service root (DSP0268 ServiceRoot) ----

export interface ServiceRoot {
  redfishVersion?: string;
  uuid?: string;
  vendor?: string;
  product?: string;
  systems: string;
  /** Links.Sessions: where a session login is POSTed; absent = the service offers no sessions. */
  sessions?: string;
}

export function readServiceRoot(obj: JsonObject): ServiceRoot {
  const what = 'service root';
  const systems = optLink(obj, 'Systems', what);
  if (!systems) throw new MetalboxError('BMC_PROTOCOL', 'service root: no "Systems" collection (is this a Redfish service?)');
  const links = obj.Links;
  const sessions = isObject(links) ? optLink(links, 'Sessions', `${what} Links`) : undefined;
  return {
    redfishVersion: optString(obj, 'RedfishVersion', what),
    uuid: optString(obj, 'UUID', what),
    vendor: optString(obj, 'Vendor', what),
    product: optString(obj, 'Product', what),
    systems,
    sessions,
  };
}

// ---- Collections (DSP0266 "Resource collections") ----

export interface CollectionPage {
  members: string[];
  next?: string;
}

export function readCollection(obj: JsonObject, what: string): CollectionPage {
  const members = obj.Members;
  if (!Array.isArray(members)) throw violation(what, 'Members', 'an array');
  const ids = members.map((m) => {
    if (!isObject(m) || typeof m['@odata.id'] !== 'string') throw violation(what, 'Members', 'an array of links');
    return m['@odata.id'];
  });
  return { members: ids, next: optString(obj, 'Members@odata.nextLink', what) };
}

/** Whether a member link names the system `id` (its last path segment, or the whole path). */
export function memberMatches(link: string, id: string): boolean {
  const trimmed = link.replace(/\/+$/, '');
  return trimmed === id.replace(/\/+$/, '') || trimmed.slice(trimmed.lastIndexOf('/') + 1) === id;
}

// ---- ComputerSystem.PowerState (DSP0268 Resource.PowerState) ----

/**
 * PoweringOn and PoweringOff both mean power is applied right now: a machine that is shutting down
 * still runs its OS, and one powering on is already coming up. So both read as 'on' (like an IPMI chassis
 * status during the same transitions); a caller waiting for 'off' after soft-off keeps polling until Off.
 * Paused (v1_16) is powered too. An unknown future value is 'unknown', not an error.
 */
export function powerStateOf(system: JsonObject): PowerState {
  const v = optString(system, 'PowerState', 'ComputerSystem');
  switch (v) {
    case 'On': case 'PoweringOn': case 'PoweringOff': case 'Paused': return 'on';
    case 'Off': return 'off';
    default: return 'unknown';
  }
}

// ---- The Reset action (DSP0266 "Actions", DSP0268 ComputerSystem.Reset, ActionInfo) ----

export interface ResetAction {
  target: string;
  /** ResetType@Redfish.AllowableValues when the service states it inline. */
  allowable?: string[];
  /** @Redfish.ActionInfo: a resource that lists the parameters and their allowable values. */
  actionInfo?: string;
}

export function readResetAction(system: JsonObject): ResetAction | undefined {
  const actions = system.Actions;
  if (actions === undefined || actions === null) return undefined;
  if (!isObject(actions)) throw violation('ComputerSystem', 'Actions', 'an object');
  const reset = actions['#ComputerSystem.Reset'];
  if (reset === undefined || reset === null) return undefined;
  const what = 'ComputerSystem #ComputerSystem.Reset';
  if (!isObject(reset)) throw violation('ComputerSystem', '#ComputerSystem.Reset', 'an object');
  const target = optString(reset, 'target', what);
  if (!target || !target.startsWith('/')) throw violation(what, 'target', 'an absolute URI');
  return {
    target,
    allowable: optStringArray(reset, 'ResetType@Redfish.AllowableValues', what),
    actionInfo: optString(reset, '@Redfish.ActionInfo', what),
  };
}

/** The ResetType parameter's AllowableValues from an ActionInfo resource (DSP0268 ActionInfo.Parameters). */
export function allowableFromActionInfo(info: JsonObject): string[] | undefined {
  const params = info.Parameters;
  if (!Array.isArray(params)) return undefined;
  for (const p of params) {
    if (isObject(p) && p.Name === 'ResetType') return optStringArray(p, 'AllowableValues', 'ActionInfo ResetType');
  }
  return undefined;
}

/** What to POST for a power action: one ResetType, or power off then on (a cycle without PowerCycle). */
export type ResetPlan =
  | { kind: 'single'; resetType: string }
  | { kind: 'off-on'; off: string; on: string };

/**
 * The ResetType(s) for each action, best first. Only values that do exactly what the action means (or,
 * for the restarts, a stronger form of it) are listed; PushPowerButton is never used, because it toggles
 * and would turn a running machine off when asked for 'on'.
 *  - on: On, else ForceOn.       - off: ForceOff.       - soft-off: GracefulShutdown.
 *  - reset: ForceRestart, else PowerCycle (a restart that also removes power).
 *  - cycle: PowerCycle, else ForceOff then On (power really goes away, as with PowerCycle), else
 *    ForceRestart (a restart without power removal: the machine still reboots).
 */
const SINGLE: Record<PowerAction, readonly string[]> = {
  'on': ['On', 'ForceOn'],
  'off': ['ForceOff'],
  'soft-off': ['GracefulShutdown'],
  'reset': ['ForceRestart', 'PowerCycle'],
  'cycle': ['PowerCycle'],
};

/**
 * Picks the plan from the values the system offers. `allowable` undefined means the service did not say
 * (DSP0266: without the annotation any value of the enum may be tried): the first choice is sent and the
 * service's answer decides. Returns undefined when the system offers nothing that fits.
 */
export function planReset(action: PowerAction, allowable: readonly string[] | undefined): ResetPlan | undefined {
  const first = SINGLE[action][0]!;
  if (allowable === undefined) return { kind: 'single', resetType: first };
  const single = SINGLE[action].find((v) => allowable.includes(v));
  if (single) return { kind: 'single', resetType: single };
  if (action === 'cycle') {
    const on = ['On', 'ForceOn'].find((v) => allowable.includes(v));
    if (allowable.includes('ForceOff') && on) return { kind: 'off-on', off: 'ForceOff', on };
    if (allowable.includes('ForceRestart')) return { kind: 'single', resetType: 'ForceRestart' };
  }
  return undefined;
}

// ---- Boot override (DSP0268 ComputerSystem.Boot) ----

/**
 * The PATCH body that sets a boot override. BootSourceOverrideMode (v1_1) is sent only when the system
 * reports the property: a service that predates it rejects unknown properties, and such a system has a
 * single boot mode anyway. Every value is checked against the @Redfish.AllowableValues the system states.
 */
export function bootPatch(system: JsonObject, request: BootDeviceRequest): JsonObject {
  const boot = system.Boot;
  if (!isObject(boot)) throw new MetalboxError('BMC_UNSUPPORTED', 'this system has no Boot properties: no boot override over Redfish');
  const target = request.device === 'pxe' ? 'Pxe' : 'Hdd';
  const enabled = request.persistent ? 'Continuous' : 'Once';
  const mode = request.efi ? 'UEFI' : 'Legacy';
  const check = (key: string, value: string) => {
    const allowed = optStringArray(boot, `${key}@Redfish.AllowableValues`, 'ComputerSystem Boot');
    if (allowed && !allowed.includes(value)) {
      throw new MetalboxError('BMC_UNSUPPORTED', `this system does not offer ${key} ${value} (it offers ${allowed.join(', ') || 'nothing'})`, {
        details: { property: key, value, allowable: allowed },
      });
    }
  };
  check('BootSourceOverrideTarget', target);
  check('BootSourceOverrideEnabled', enabled);
  const patch: JsonObject = { BootSourceOverrideTarget: target, BootSourceOverrideEnabled: enabled };
  if ('BootSourceOverrideMode' in boot) {
    check('BootSourceOverrideMode', mode);
    patch.BootSourceOverrideMode = mode;
  }
  return { Boot: patch };
}

// ---- Identify (DSP0268 Resource.IndicatorLED, LocationIndicatorActive since ComputerSystem v1_13) ----

/** The PATCH body that lights or darkens the identify LED, or undefined when the resource has none. */
export function indicatorPatch(resource: JsonObject, on: boolean): JsonObject | undefined {
  // LocationIndicatorActive replaces the deprecated IndicatorLED; prefer it when both are present.
  if (typeof resource.LocationIndicatorActive === 'boolean') return { LocationIndicatorActive: on };
  if (typeof resource.IndicatorLED === 'string') return { IndicatorLED: on ? 'Blinking' : 'Off' };
  return undefined;
}

// ---- Error responses (DSP0266 "Error responses": { "error": { code, message, @Message.ExtendedInfo } }) ----

export interface ExtendedError {
  /** Human text: the ExtendedInfo messages, else error.message; bounded, no control characters. */
  text?: string;
  messageIds: string[];
}

const MAX_TEXT = 300;

export function readExtendedError(body: Buffer): ExtendedError {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return { messageIds: [] };
  }
  if (!isObject(value) || !isObject(value.error)) return { messageIds: [] };
  const error = value.error;
  const infos = Array.isArray(error['@Message.ExtendedInfo']) ? error['@Message.ExtendedInfo'].filter(isObject) : [];
  const messageIds = infos.map((i) => i.MessageId).filter((id): id is string => typeof id === 'string').slice(0, 8).map(clean);
  const messages = infos.map((i) => (typeof i.Message === 'string' ? i.Message : typeof i.MessageId === 'string' ? i.MessageId : undefined))
    .filter((m): m is string => m !== undefined);
  let text = messages.join('; ');
  if (!text && typeof error.message === 'string') text = error.message;
  text = clean(text);
  return { text: text || undefined, messageIds };
}

function clean(text: string): string {
  const flat = text.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  return flat.length > MAX_TEXT ? `${flat.slice(0, MAX_TEXT)}...` : flat;
}

/** Base registry message ids that mean "this value or action is not supported here" (DSP8011 Base). */
export function meansUnsupported(messageIds: readonly string[]): boolean {
  return messageIds.some((id) => /\.(ActionParameterValueNotInList|ActionParameterNotSupported|ActionNotSupported|PropertyValueNotInList|PropertyNotWritable|PropertyUnknown|ActionParameterValueError)$/.test(id));
}

// ---- Certificate fingerprints ----

/** "AB:CD:..." (64 upper hex digits in colon pairs) from any spelling, or undefined when it is not SHA-256. */
export function normalizeFingerprint(text: string): string | undefined {
  const hex = text.trim().replace(/^sha-?256[:=\s]*/i, '').replace(/[:\s-]/g, '').toUpperCase();
  if (!/^[0-9A-F]{64}$/.test(hex)) return undefined;
  return hex.match(/../g)!.join(':');
}
