// The store's contract. `core`, `services` and `api` see only these interfaces; `main` picks the
// implementation (LevelDB in production, memory in unit tests). One contract suite
// (test/unit/store-contract.test.ts) runs against every implementation.
//
// Rules (after abstract-level): a missing record is `undefined`, never an error; error `code`s are the
// contract; every acknowledged write (a resolved `write()`/`put()`/`del()`) is durable on disk.

/** A machine known to metalbox. Later issues (lifecycle, API) add fields; bump SCHEMA_VERSIONS then. */
export interface MachineRecord {
  id: string;
  hostname: string;
  /** SMBIOS system UUID, lower case, when known. */
  uuid?: string;
  /** Boot/provisioning MACs, lower case colon form. */
  macs: string[];
  state: string;
  tags: string[];
  createdAt: string;
  updatedAt: string;
  [extra: string]: unknown;
}

export interface InterfaceRecord { id: string; machineId: string; mac: string; name?: string; [extra: string]: unknown }

export interface LeaseRecord {
  /** The leased IPv4 address, dotted quad. Also the key. */
  ip: string;
  mac: string;
  subnet: string;
  /** ISO time the lease ends. */
  expiresAt: string;
  hostname?: string;
  clientId?: string;
  state: 'offered' | 'bound' | 'released' | 'declined';
  [extra: string]: unknown;
}

/**
 * A machine's BMC (src/services/bmc). Secrets are stored sealed only (AES-256-GCM under `<stateDir>/secret.key`,
 * src/bmc/secrets.ts, with `bmc/<id>/<field>` as associated data): never a clear password or Kg here.
 */
export interface BmcRecord {
  id: string;
  /** The machine it powers; at most one BMC per machine. */
  machineId?: string;
  /** 'ipmi' | 'redfish' | 'wol' | 'manual' */
  driver: string;
  /** Host or IPv4 address (ipmi, redfish); the machine's MAC, canonical (wol); a free-text location (manual). */
  address: string;
  port?: number;
  username?: string;
  passwordSealed?: string;
  /** IPMI cipher suite (3 or 17). */
  cipherSuite?: number;
  /** IPMI BMC key Kg (hex), sealed. */
  kgSealed?: string;
  /** Redfish: pinned certificate fingerprint, SHA-256 "AB:CD:...". */
  tlsFingerprint?: string;
  /** Redfish: the ComputerSystem to drive. */
  systemId?: string;
  /** Wake-on-LAN: interface the packet leaves by (else config bmc.wolInterface, else the provisioning interfaces). */
  wolInterface?: string;
  /** Last power state read from the BMC (or confirmed by the operator, manual). */
  lastPowerState?: 'on' | 'off' | 'unknown';
  /** When the state was last written here (polls that change nothing are not written). */
  lastPolledAt?: string;
  lastChangedAt?: string;
  lastError?: { code: string; message: string; at: string };
  /** Consecutive failed operations; at bmc.unreachableAfter the BMC is polled only every bmc.unreachablePollSeconds. */
  failures?: number;
  /** Manual driver: what the operator was asked to do and has not confirmed yet. */
  pending?: { request: string; actor: string; at: string }[];
  createdAt: string;
  updatedAt: string;
  [extra: string]: unknown;
}
export interface ImageRecord { id: string; name: string; sha256?: string; size?: number; [extra: string]: unknown }
export interface DnsRecordRecord { id: string; name: string; type: string; value: string; ttl?: number; [extra: string]: unknown }
export interface EventRecord {
  /** Time-ordered key (see `eventKey`). */
  id: string;
  at: string;
  type: string;
  actor: string;
  subject?: string;
  data?: Record<string, unknown>;
}
export interface UserRecord { id: string; username: string; role: string; passwordHash: string; [extra: string]: unknown }
/** A credential, stored as its sha-256 only. `kind: 'boot'` (per-boot tokens, src/core/boot-tokens.ts) has no user. */
export interface TokenRecord { id: string; kind?: string; userId?: string; hash: string; expiresAt?: string; [extra: string]: unknown }
/** Settings are free-form JSON values under a dotted key. */
export type SettingValue = string | number | boolean | null | SettingValue[] | { [k: string]: SettingValue };

export interface Records {
  machines: MachineRecord;
  interfaces: InterfaceRecord;
  leases: LeaseRecord;
  bmcs: BmcRecord;
  images: ImageRecord;
  dnsRecords: DnsRecordRecord;
  events: EventRecord;
  users: UserRecord;
  tokens: TokenRecord;
  settings: SettingValue;
}
export type CollectionName = keyof Records;

/**
 * Secondary indexes kept in the same atomic batch as the record. Index values are matched case-insensitively
 * (stored lower case). Machine indexes are unique: `mac` (each entry of `macs`), `uuid`, `hostname` (an empty
 * hostname or a missing uuid is not indexed); a write that would give one value two owners fails with
 * STORE_CONFLICT. `leases.mac` is not unique: it names the lease most recently written for that MAC (the
 * current one); it is removed when that lease is deleted or moves to another MAC, and not re-pointed at an
 * older lease of the same MAC.
 */
export interface Indexes {
  machines: 'mac' | 'uuid' | 'hostname';
  leases: 'mac';
  /** Unique: one user per name (case-insensitive, so "Admin" and "admin" are the same user). */
  users: 'username';
}
export type IndexName<C extends CollectionName> = C extends keyof Indexes ? Indexes[C] : never;

export type WriteOp =
  { [C in CollectionName]: { type: 'put'; collection: C; key: string; value: Records[C] } }[CollectionName]
  | { type: 'del'; collection: CollectionName; key: string };

export interface RangeOptions {
  gt?: string; gte?: string; lt?: string; lte?: string;
  limit?: number;
  reverse?: boolean;
}

export interface Collection<C extends CollectionName> {
  readonly name: C;
  get(key: string): Promise<Records[C] | undefined>;
  /** The record whose index `index` has value `value`; `undefined` if none. Lease by IP is `get(ip)`. */
  getBy(index: IndexName<C>, value: string): Promise<Records[C] | undefined>;
  /**
   * Scan in key order (UTF-8 byte order, as LevelDB); a consistent view of what was durable when the scan
   * started (its first `next()`). Give at most one of gt/gte and one of lt/lte (else TypeError).
   */
  entries(options?: RangeOptions): AsyncIterable<[string, Records[C]]>;
  count(): Promise<number>;
  /** Durable single put/del: resolves once on disk. Same as `store.write([op])`. */
  put(key: string, value: Records[C]): Promise<void>;
  del(key: string): Promise<void>;
}

export interface StoreStats {
  /** Batches written with sync (each one fsync). */
  syncs: number;
  /** Write calls acknowledged. */
  writes: number;
  /** Largest number of write calls that shared one sync. */
  maxGroup: number;
}

export interface Store {
  readonly machines: Collection<'machines'>;
  readonly interfaces: Collection<'interfaces'>;
  readonly leases: Collection<'leases'>;
  readonly bmcs: Collection<'bmcs'>;
  readonly images: Collection<'images'>;
  readonly dnsRecords: Collection<'dnsRecords'>;
  readonly events: Collection<'events'>;
  readonly users: Collection<'users'>;
  readonly tokens: Collection<'tokens'>;
  readonly settings: Collection<'settings'>;
  collection<C extends CollectionName>(name: C): Collection<C>;
  /**
   * Atomic, durable write of several ops: all or none, index entries included, on disk before the promise
   * resolves. Concurrent writes share one sync (group commit). A unique-index clash rejects this call with
   * STORE_CONFLICT and writes none of its ops; other calls in the same group are unaffected.
   */
  write(ops: WriteOp[]): Promise<void>;
  /** For `backupStore` only: a consistent raw view of everything, taken now. Close it when done. */
  rawSnapshot(): RawSnapshot;
  stats(): StoreStats;
  close(): Promise<void>;
}

/**
 * A consistent, raw read of everything a store holds (records, index entries, meta), for backups: keys and
 * values in the LevelDB store's on-disk layout, in key order. The view is fixed when `rawSnapshot()` returns;
 * writes may go on meanwhile. The memory store produces the same layout, so its backups restore too.
 */
export interface RawSnapshot {
  /** The store format version of the data (see STORE_FORMAT_VERSION). */
  readonly storeFormat: number;
  count(): Promise<number>;
  entries(): AsyncIterable<[Uint8Array, Uint8Array]>;
  /** Release the snapshot; idempotent. */
  close(): Promise<void>;
}
