// One machine: identity and state, inventory (CPU, memory, disks, NICs), BMC and power, the lifecycle
// actions (deploy with image, disk and SSH keys; release with an erase mode; rescue with SSH keys), the boot
// timeline and the events. Live: the stream of this machine's events reloads what they change.
import { useRef, useState } from 'preact/hooks';
import { ApiError, get, post } from '../api.tsx';
import { useLiveEvents, type LiveEvent } from '../live.tsx';
import { Link } from '../router.tsx';
import { Dialog, Empty, FormStatus, Notice, SelectField, StateBadge, TextArea, TextField, bytes, useForm, useLoad, when } from '../ui.tsx';

interface Inventory {
  cpu?: { model?: string; cores?: number; threads?: number; sockets?: number };
  memoryBytes?: number;
  dmi?: { vendor?: string; product?: string; serial?: string; biosVersion?: string };
  firmware?: string;
  disks?: { name: string; path?: string; sizeBytes?: number; model?: string; serial?: string; rotational?: boolean; removable?: boolean }[];
  nics?: { name: string; mac: string; link?: boolean; speedMbps?: number; driver?: string }[];
  reportedAt?: string;
}
export interface Machine {
  id: string; hostname: string; uuid?: string; macs: string[]; state: string; tags: string[]; createdAt: string; updatedAt: string;
  stateChangedAt?: string; stateReason?: string; phaseDeadline?: string; commissionedAt?: string;
  inventory?: Inventory; deployment?: { image?: string; disk?: string; sshKeys?: string[]; requestedAt?: string; phonedHomeAt?: string }; actions: string[];
}
interface Ev { id: string; at: string; type: string; actor: string; subject?: string; data?: Record<string, unknown> }
export interface Bmc { id: string; driver: string; address: string; port?: number; username?: string; machineId?: string; powerState: string; unreachable: boolean; lastPolledAt?: string; lastError?: { code: string; message: string; at: string }; pending: { request: string; actor: string; at: string }[] }
interface Image { name: string; files: Record<string, unknown> }

const ACTION_LABELS: Record<string, string> = {
  commission: 'Commission', allocate: 'Allocate', deploy: 'Deploy…', release: 'Release…', rescue: 'Rescue…', 'exit-rescue': 'Exit rescue',
  abort: 'Abort', 'mark-broken': 'Mark broken', 'mark-fixed': 'Mark fixed',
};

function summary(e: Ev): string {
  const d = e.data ?? {};
  if (e.type === 'machine.state') return `${String(d.from)} → ${String(d.to)} (${String(d.action)})${d.reason ? `: ${String(d.reason)}` : ''}`;
  const parts = Object.entries(d).filter(([k, v]) => k !== 'address' && (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')).slice(0, 5);
  return parts.map(([k, v]) => `${k}=${String(v)}`).join(' ');
}

export function MachinePage({ id, role }: { id: string; role: string }) {
  const machine = useLoad(() => get<Machine>(`/api/v1/machines/${encodeURIComponent(id)}`), [id]);
  const timeline = useLoad(() => get<{ items: Ev[] }>(`/api/v1/machines/${encodeURIComponent(id)}/timeline?limit=100`), [id]);
  const events = useLoad(() => get<{ items: Ev[] }>(`/api/v1/machines/${encodeURIComponent(id)}/events?limit=50`), [id]);
  const bmc = useLoad(() => get<Bmc>(`/api/v1/bmcs/${encodeURIComponent(id)}`).catch((err: unknown) => {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }), [id]);
  const [dialog, setDialog] = useState<string | undefined>();
  const [live, setLive] = useState<string | undefined>();
  const timer = useRef<number | undefined>(undefined);

  useLiveEvents((e: LiveEvent | 'reset') => {
    if (e !== 'reset' && e.type === 'machine.state') setLive(`State changed to ${String(e.data?.to)} (${String(e.data?.action)}) at ${when(e.at)}`);
    window.clearTimeout(timer.current);
    timer.current = window.setTimeout(() => { machine.reload(); timeline.reload(); events.reload(); }, 150);
  }, machine.data?.id ?? id);

  const m = machine.data;
  if (machine.error && !m) return <section><h1>Machine {id}</h1><Notice kind="error">{machine.error}</Notice><p><Link href="/machines">Back to the machine list</Link></p></section>;
  if (!m) return <p class="boot-note">Loading…</p>;
  const canAct = role !== 'viewer';
  const inv = m.inventory;
  return (
    <section aria-labelledby="m-title" class="machine">
      <p class="crumbs"><Link href="/machines">Machines</Link> / {m.hostname}</p>
      <div class="page-head">
        <h1 id="m-title">{m.hostname}</h1>
        <span data-testid="machine-state"><StateBadge state={m.state} /></span>
      </div>
      <div aria-live="polite" role="status" class="live-note">{live}</div>
      {m.stateReason && <Notice kind={m.state.startsWith('Failed') || m.state === 'Broken' ? 'error' : 'info'}>{m.stateReason}</Notice>}
      {canAct && m.actions.length > 0 && (
        <div class="actions" role="toolbar" aria-label="Lifecycle actions">
          {m.actions.map((a) => (
            <button type="button" class={a === 'deploy' || a === 'commission' ? 'primary' : ''} data-action={a}
              onClick={() => setDialog(a)}>{ACTION_LABELS[a] ?? a}</button>
          ))}
        </div>
      )}
      <div class="grid-2">
        <div class="card">
          <h2>Machine</h2>
          <dl class="facts">
            <dt>Id</dt><dd><code>{m.id}</code></dd>
            <dt>MACs</dt><dd>{m.macs.map((x) => <code class="block">{x}</code>)}</dd>
            <dt>UUID</dt><dd>{m.uuid ? <code>{m.uuid}</code> : '—'}</dd>
            <dt>Tags</dt><dd>{m.tags.length ? m.tags.map((t) => <span class="tag">{t}</span>) : '—'}</dd>
            <dt>State since</dt><dd>{when(m.stateChangedAt ?? m.createdAt)}</dd>
            {m.phaseDeadline && <><dt>Times out</dt><dd>{when(m.phaseDeadline)}</dd></>}
            <dt>Commissioned</dt><dd>{when(m.commissionedAt)}</dd>
            {m.deployment && <><dt>Deployment</dt><dd>{m.deployment.image ?? 'default image'} on {m.deployment.disk ?? 'auto'}{m.deployment.phonedHomeAt ? `, up since ${when(m.deployment.phonedHomeAt)}` : ''}</dd></>}
          </dl>
        </div>
        <PowerCard id={m.id} bmc={bmc.data} bmcError={bmc.error} canAct={canAct} />
      </div>
      <div class="card">
        <h2>Inventory</h2>
        {!inv && <Empty>No inventory yet: commission the machine to collect it.</Empty>}
        {inv && (
          <>
            <dl class="facts">
              <dt>CPU</dt><dd>{inv.cpu?.model ?? '—'}{inv.cpu ? ` (${inv.cpu.sockets ?? 1} socket, ${inv.cpu.cores ?? '?'} cores, ${inv.cpu.threads ?? '?'} threads)` : ''}</dd>
              <dt>Memory</dt><dd>{bytes(inv.memoryBytes)}</dd>
              <dt>System</dt><dd>{[inv.dmi?.vendor, inv.dmi?.product, inv.dmi?.serial && `serial ${inv.dmi.serial}`].filter(Boolean).join(', ') || '—'}</dd>
              <dt>Firmware</dt><dd>{inv.firmware ?? '—'}{inv.dmi?.biosVersion ? `, BIOS ${inv.dmi.biosVersion}` : ''}</dd>
              <dt>Reported</dt><dd>{when(inv.reportedAt)}</dd>
            </dl>
            <h3>Disks</h3>
            <table class="table"><thead><tr><th scope="col">Name</th><th scope="col">Size</th><th scope="col">Model</th><th scope="col">Serial</th><th scope="col">Kind</th></tr></thead>
              <tbody>{(inv.disks ?? []).map((d) => <tr><td><code>{d.path ?? d.name}</code></td><td>{bytes(d.sizeBytes)}</td><td>{d.model ?? ''}</td><td>{d.serial ?? ''}</td><td>{d.rotational ? 'HDD' : 'SSD'}{d.removable ? ', removable' : ''}</td></tr>)}</tbody>
            </table>
            <h3>Network interfaces</h3>
            <table class="table"><thead><tr><th scope="col">Name</th><th scope="col">MAC</th><th scope="col">Link</th><th scope="col">Speed</th><th scope="col">Driver</th></tr></thead>
              <tbody>{(inv.nics ?? []).map((n) => <tr><td>{n.name}</td><td><code>{n.mac}</code></td><td>{n.link ? 'up' : 'down'}</td><td>{n.speedMbps ? `${n.speedMbps} Mb/s` : '—'}</td><td>{n.driver ?? ''}</td></tr>)}</tbody>
            </table>
          </>
        )}
      </div>
      <div class="grid-2">
        <div class="card">
          <h2>Boot timeline</h2>
          {timeline.data && timeline.data.items.length === 0 && <Empty>Nothing has happened at boot yet.</Empty>}
          <ol class="timeline" data-testid="timeline">
            {timeline.data?.items.map((e) => <li><time dateTime={e.at}>{when(e.at)}</time> <code>{e.type}</code> {summary(e)}</li>)}
          </ol>
        </div>
        <div class="card">
          <h2>Events</h2>
          {events.data && events.data.items.length === 0 && <Empty>No events.</Empty>}
          <ol class="timeline" data-testid="events">
            {events.data?.items.map((e) => <li><time dateTime={e.at}>{when(e.at)}</time> <code>{e.type}</code> {summary(e)} <span class="muted">by {e.actor}</span></li>)}
          </ol>
        </div>
      </div>
      <Dialog title={`${ACTION_LABELS[dialog ?? '']?.replace('…', '') ?? dialog}: ${m.hostname}`} open={dialog !== undefined} onClose={() => setDialog(undefined)}>
        {dialog && <ActionForm machine={m} action={dialog} onDone={() => { setDialog(undefined); machine.reload(); events.reload(); timeline.reload(); }} />}
      </Dialog>
    </section>
  );
}

function PowerCard({ id, bmc, bmcError, canAct }: { id: string; bmc: Bmc | null | undefined; bmcError: string | undefined; canAct: boolean }) {
  const [power, setPower] = useState<string | undefined>();
  const form = useForm();
  const act = (action: string) => form.submit(async () => {
    const r = await post<{ result: string; message: string }>(`/api/v1/machines/${id}/power`, { action });
    return `Power ${action}: ${r.result}. ${r.message}`;
  });
  const read = () => form.submit(async () => {
    const r = await get<{ state: string }>(`/api/v1/machines/${id}/power`);
    setPower(r.state);
    return `The BMC says the power is ${r.state}.`;
  });
  return (
    <div class="card" data-testid="power-card">
      <h2>BMC and power</h2>
      {bmcError && <Notice kind="error">{bmcError}</Notice>}
      {bmc === null && <Empty>No BMC is registered for this machine (<Link href="/bmcs">BMCs</Link>).</Empty>}
      {bmc && (
        <dl class="facts">
          <dt>Driver</dt><dd>{bmc.driver}</dd>
          <dt>Address</dt><dd><code>{bmc.address}{bmc.port ? `:${bmc.port}` : ''}</code></dd>
          {bmc.username && <><dt>User</dt><dd>{bmc.username}</dd></>}
          {bmc.lastError && <><dt>Last error</dt><dd>{bmc.lastError.code}: {bmc.lastError.message}</dd></>}
          {bmc.pending.length > 0 && <><dt>Waiting for the operator</dt><dd>{bmc.pending.map((p) => p.request).join(', ')}</dd></>}
          <dt>Power</dt><dd data-testid="power-state">{power ?? bmc.powerState}</dd>
        </dl>
      )}
      {bmc && (
        <div class="actions" role="toolbar" aria-label="Power">
          <button type="button" onClick={() => void read()} disabled={form.busy}>Read power state</button>
          {canAct && ['on', 'off', 'soft-off', 'cycle', 'reset'].map((a) => (
            <button type="button" data-power={a} disabled={form.busy} onClick={() => { if (a === 'on' || window.confirm(`Power ${a} this machine?`)) void act(a); }}>Power {a}</button>
          ))}
        </div>
      )}
      <FormStatus form={form} />
    </div>
  );
}

function ActionForm({ machine, action, onDone }: { machine: Machine; action: string; onDone: () => void }) {
  const form = useForm();
  const [reason, setReason] = useState('');
  const [image, setImage] = useState('');
  const [disk, setDisk] = useState('auto');
  const [keys, setKeys] = useState('');
  const [erase, setErase] = useState('quick');
  const images = useLoad(() => (action === 'deploy' ? get<{ images: Image[] }>('/api/v1/images').then((r) => r.images) : Promise.resolve([] as Image[])), [action]);
  const imageList = images.data ?? [];
  const keyLines = () => keys.split('\n').map((l) => l.trim()).filter(Boolean);
  const fields = ['reason', 'image', 'disk', 'sshKeys', 'erase'];
  return (
    <form class="stack" onSubmit={(e) => {
      e.preventDefault();
      void form.submit(async () => {
        const body: Record<string, unknown> = {};
        if (reason.trim()) body.reason = reason.trim();
        if (action === 'deploy') {
          if (image) body.image = image;
          body.disk = disk.trim() || 'auto';
          body.sshKeys = keyLines();
        }
        if (action === 'rescue' && keyLines().length > 0) body.sshKeys = keyLines();
        if (action === 'release') body.erase = erase;
        await post(`/api/v1/machines/${machine.id}/actions/${action}`, body);
      }, fields, { IMAGE_INVALID: 'image', LIFECYCLE_INVALID_TRANSITION: 'reason' }).then((ok) => { if (ok) onDone(); });
    }}>
      {action === 'deploy' && (
        <>
          <SelectField label="Image" name="image" form={form} value={image} onValue={setImage}
            hint="Registered images with a disk image (rootfs); the default is the setting deploy.defaultImage."
            options={[['', 'default (deploy.defaultImage)'], ...imageList.filter((i) => 'rootfs' in (i.files ?? {})).map((i) => i.name)]} />
          <TextField label="Disk" name="disk" form={form} value={disk} onValue={setDisk} hint="auto (the first non-removable disk), a device path such as /dev/sda, or a disk serial" />
          <TextArea label="SSH public keys" name="sshKeys" form={form} value={keys} onValue={setKeys} rows={4} hint="One authorized_keys line each, for the default user" />
        </>
      )}
      {action === 'rescue' && <TextArea label="SSH public keys" name="sshKeys" form={form} value={keys} onValue={setKeys} rows={4} hint="For root in the rescue environment; empty: the last deployment's keys" />}
      {action === 'release' && (
        <SelectField label="Erase" name="erase" form={form} value={erase} onValue={setErase}
          options={[['quick', 'quick: partition tables and signatures'], ['full', 'full: every byte (hours on large disks)'], ['none', 'none: leave the disks as they are']]} />
      )}
      <TextField label="Reason (optional)" name="reason" form={form} value={reason} onValue={setReason} hint="Recorded in the machine's events" />
      <FormStatus form={form} />
      <div class="actions">
        <button type="submit" class="primary" disabled={form.busy}>{form.busy ? 'Working…' : (ACTION_LABELS[action] ?? action).replace('…', '')}</button>
      </div>
    </form>
  );
}
