// Dashboard: each rack service's health and figures, machines by state, address-pool usage per subnet,
// the newest events. Refreshed every 5 s and at once when a machine changes (the live stream).
import { useEffect, useRef } from 'preact/hooks';
import { get } from '../api.tsx';
import { useLiveEvents } from '../live.tsx';
import { Link } from '../router.tsx';
import { BarChart, Empty, Notice, StateBadge, useLoad, when } from '../ui.tsx';

export interface Overview {
  machines: { total: number; byState: Record<string, number>; tags: { tag: string; count: number }[] };
  services: { id: string; label: string; state: string; figures: { label: string; value: number | null }[] }[];
  events: { id: string; at: string; type: string; actor: string; subject?: string }[];
}
export interface Subnet {
  cidr: string; gateway?: string; dynamicRanges: string[]; excludedRanges: string[]; proxyDhcp: boolean;
  reservations: { config: number; api: number };
  usage: { size: number; bound: number; offered: number; declined: number; free: number; reserved: number; utilization: number } | null;
}

const HEALTH: Record<string, string> = { running: 'ok', off: 'off', idle: 'off', starting: 'warn', stopping: 'warn', stopped: 'bad', failed: 'bad' };

export function DashboardPage() {
  const overview = useLoad(() => get<Overview>('/api/v1/overview?events=15'));
  const subnets = useLoad(() => get<{ items: Subnet[] }>('/api/v1/subnets').then((r) => r.items));
  const timer = useRef<number | undefined>(undefined);
  const reload = () => { overview.reload(); subnets.reload(); };
  useEffect(() => {
    const t = window.setInterval(reload, 5000);
    return () => window.clearInterval(t);
  }, []);
  // Bursts of changes (a rack being deployed) refresh once per second at most.
  useLiveEvents(() => { if (timer.current === undefined) timer.current = window.setTimeout(() => { timer.current = undefined; overview.reload(); }, 1000); });

  const o = overview.data;
  return (
    <section aria-labelledby="dash-title">
      <h1 id="dash-title">Dashboard</h1>
      {overview.error && <Notice kind="error">{overview.error}</Notice>}
      <h2>Services</h2>
      <ul class="services">
        {o?.services.map((s) => (
          <li class={`card service health-${HEALTH[s.state] ?? 'warn'}`} data-service={s.id}>
            <div class="service-head"><span class="service-name">{s.label}</span><span class="service-state">{s.state}</span></div>
            <dl>
              {s.figures.map((f) => <><dt>{f.label}</dt><dd>{f.value === null ? '—' : f.value.toLocaleString()}</dd></>)}
            </dl>
          </li>
        ))}
      </ul>
      <div class="grid-2">
        <div class="card">
          <h2>Machines by state <small class="muted">({o?.machines.total.toLocaleString() ?? '…'} machines)</small></h2>
          {o && (
            <BarChart title="Machines by state" rows={Object.entries(o.machines.byState).filter(([, n]) => n > 0).map(([s, n]) => ({ label: s, value: n, tone: `tone-${s.toLowerCase()}` }))} format={(n) => n.toLocaleString()} />
          )}
          {o && (
            <ul class="chips" aria-label="Open the machine list filtered by state">
              {Object.entries(o.machines.byState).filter(([, n]) => n > 0).map(([s, n]) => (
                <li><Link href={`/machines?state=${s}`}><StateBadge state={s} /> {n.toLocaleString()}</Link></li>
              ))}
            </ul>
          )}
        </div>
        <div class="card">
          <h2>Address pools</h2>
          {subnets.error && <Notice kind="error">{subnets.error}</Notice>}
          {subnets.data && subnets.data.length === 0 && <Empty>No provisioning subnets are configured.</Empty>}
          {subnets.data && subnets.data.length > 0 && (
            <BarChart title="Pool usage per subnet" max={1} rows={subnets.data.map((s) => ({
              label: s.cidr,
              value: s.usage?.utilization ?? 0,
              detail: s.usage ? `${Math.round(s.usage.utilization * 100)}% (${s.usage.size - s.usage.free} of ${s.usage.size})` : s.proxyDhcp ? 'proxy DHCP' : 'not served',
              tone: (s.usage?.utilization ?? 0) > 0.9 ? 'tone-bad' : (s.usage?.utilization ?? 0) > 0.75 ? 'tone-warn' : '',
            }))} />
          )}
        </div>
      </div>
      <div class="card">
        <h2>Recent events</h2>
        {o && o.events.length === 0 && <Empty>No events yet.</Empty>}
        {o && o.events.length > 0 && (
          <table class="table">
            <thead><tr><th scope="col">When</th><th scope="col">Event</th><th scope="col">Subject</th><th scope="col">By</th></tr></thead>
            <tbody>
              {o.events.map((e) => (
                <tr><td>{when(e.at)}</td><td><code>{e.type}</code></td><td>{e.subject && e.type.startsWith('machine.') ? <Link href={`/machines/${e.subject}`}>{e.subject}</Link> : e.subject ?? ''}</td><td>{e.actor}</td></tr>
              ))}
            </tbody>
          </table>
        )}
      </div>
    </section>
  );
}
