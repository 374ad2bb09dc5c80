// Network: the provisioning subnets (from the config file) with their ranges and pool usage, each subnet's
// reservations (the config's, read-only, and the API's: added and removed here), and the DHCP leases.
import { useState } from 'preact/hooks';
import { del, get, post, qs } from '../api.tsx';
import { Link } from '../router.tsx';
import { Empty, FormStatus, Notice, TextField, useForm, useLoad, when } from '../ui.tsx';
import type { Subnet } from './dashboard.tsx';

interface Reservation { mac: string; ip: string; hostname?: string; source: 'config' | 'api'; createdBy?: string; inactive?: string }
interface Lease { ip: string; mac: string; subnet: string; state: string; expiresAt: string; expired: boolean; hostname?: string; machineId?: string }

const cidrParam = (cidr: string) => cidr.replace('/', '-');

export function NetworkPage({ role }: { role: string }) {
  const subnets = useLoad(() => get<{ items: Subnet[] }>('/api/v1/subnets').then((r) => r.items));
  const [current, setCurrent] = useState(false);
  const leases = useLoad(() => get<{ items: Lease[]; next: string | null }>(`/api/v1/leases${qs({ limit: 500, expired: current ? 'false' : undefined })}`), [current]);
  return (
    <section aria-labelledby="net-title">
      <h1 id="net-title">Network</h1>
      {subnets.error && <Notice kind="error">{subnets.error}</Notice>}
      {subnets.data?.length === 0 && <Empty>No provisioning subnets: add them to the config file (subnets).</Empty>}
      {subnets.data?.map((s) => <SubnetCard subnet={s} admin={role === 'admin'} />)}
      <div class="card">
        <div class="page-head">
          <h2>Leases</h2>
          <label class="inline"><input type="checkbox" checked={current} onChange={() => setCurrent(!current)} /> current leases only</label>
        </div>
        {leases.error && <Notice kind="error">{leases.error}</Notice>}
        {leases.data?.items.length === 0 && <Empty>No leases.</Empty>}
        {leases.data && leases.data.items.length > 0 && (
          <table class="table">
            <thead><tr><th scope="col">Address</th><th scope="col">MAC</th><th scope="col">Subnet</th><th scope="col">State</th><th scope="col">Expires</th><th scope="col">Host name</th><th scope="col">Machine</th></tr></thead>
            <tbody>{leases.data.items.map((l) => (
              <tr><td><code>{l.ip}</code></td><td><code>{l.mac}</code></td><td>{l.subnet}</td><td>{l.state}{l.expired ? ' (expired)' : ''}</td><td>{when(l.expiresAt)}</td><td>{l.hostname ?? ''}</td>
                <td>{l.machineId ? <Link href={`/machines/${l.machineId}`}>{l.machineId}</Link> : ''}</td></tr>
            ))}</tbody>
          </table>
        )}
        {leases.data?.next && <p class="muted">Showing the first 500 leases.</p>}
      </div>
    </section>
  );
}

function SubnetCard({ subnet: s, admin }: { subnet: Subnet; admin: boolean }) {
  const reservations = useLoad(() => get<{ items: Reservation[] }>(`/api/v1/subnets/${cidrParam(s.cidr)}/reservations`).then((r) => r.items), [s.cidr]);
  const form = useForm();
  const [mac, setMac] = useState('');
  const [ip, setIp] = useState('');
  const [hostname, setHostname] = useState('');
  const u = s.usage;
  return (
    <div class="card" data-subnet={s.cidr}>
      <h2>{s.cidr}{s.proxyDhcp ? ' (proxy DHCP)' : ''}</h2>
      <dl class="facts">
        <dt>Gateway</dt><dd>{s.gateway ?? '—'}</dd>
        <dt>Dynamic ranges</dt><dd>{s.dynamicRanges.join(', ') || '—'}</dd>
        <dt>Excluded</dt><dd>{s.excludedRanges.join(', ') || '—'}</dd>
        <dt>Pool</dt><dd>{u ? `${u.size} addresses: ${u.bound} bound, ${u.offered} offered, ${u.declined} declined, ${u.free} free (${Math.round(u.utilization * 100)}% used)` : 'not served by DHCP now'}</dd>
      </dl>
      {u && <progress class="pool" max={1} value={u.utilization} aria-label={`Pool usage of ${s.cidr}`} />}
      <h3>Reservations</h3>
      {reservations.error && <Notice kind="error">{reservations.error}</Notice>}
      {reservations.data?.length === 0 && <Empty>No reservations.</Empty>}
      {reservations.data && reservations.data.length > 0 && (
        <table class="table">
          <thead><tr><th scope="col">MAC</th><th scope="col">Address</th><th scope="col">Host name</th><th scope="col">Source</th>{admin && <th scope="col"><span class="sr-only">Actions</span></th>}</tr></thead>
          <tbody>{reservations.data.map((r) => (
            <tr><td><code>{r.mac}</code></td><td><code>{r.ip}</code></td><td>{r.hostname ?? ''}</td><td>{r.source}{r.inactive ? ` (inactive: ${r.inactive})` : ''}</td>
              {admin && <td>{r.source === 'api' && <button type="button" class="ghost" onClick={() => void del(`/api/v1/subnets/${cidrParam(s.cidr)}/reservations/${r.mac}`).then(reservations.reload, (e: unknown) => window.alert(String((e as Error).message)))}>Remove</button>}</td>}</tr>
          ))}</tbody>
        </table>
      )}
      {admin && !s.proxyDhcp && (
        <form class="inline-form" aria-label={`Add a reservation in ${s.cidr}`} onSubmit={(e) => {
          e.preventDefault();
          void form.submit(async () => {
            await post(`/api/v1/subnets/${cidrParam(s.cidr)}/reservations`, { mac: mac.trim(), ip: ip.trim(), ...(hostname.trim() ? { hostname: hostname.trim() } : {}) });
            setMac(''); setIp(''); setHostname('');
            reservations.reload();
            return 'Reservation added; DHCP applies it at once.';
          }, ['mac', 'ip', 'hostname']);
        }}>
          <TextField label="MAC" name="mac" form={form} value={mac} onValue={setMac} placeholder="52:54:00:12:34:56" required />
          <TextField label="Address" name="ip" form={form} value={ip} onValue={setIp} required />
          <TextField label="Host name" name="hostname" form={form} value={hostname} onValue={setHostname} />
          <button type="submit" disabled={form.busy}>Add reservation</button>
          <FormStatus form={form} />
        </form>
      )}
    </div>
  );
}
