// DNS records added by hand (the machines' and leases' A/PTR records are made by metalbox and not listed).
import { useState } from 'preact/hooks';
import { del, get, post, qs } from '../api.tsx';
import { Empty, FormStatus, Notice, SelectField, TextField, useForm, useLoad } from '../ui.tsx';

interface DnsRecord { id: string; name: string; type: string; value: string; ttl?: number }
const TYPES = ['A', 'AAAA', 'CNAME', 'NS', 'TXT', 'MX', 'SRV'];

export function DnsPage({ role }: { role: string }) {
  const zones = useLoad(() => get<{ forward: string; reverse: string[] }>('/api/v1/dns/zones'));
  const [zone, setZone] = useState('');
  const records = useLoad(() => get<{ items: DnsRecord[]; total: number; next: string | null }>(`/api/v1/dns/records${qs({ zone: zone || undefined, limit: 500 })}`), [zone]);
  const canEdit = role !== 'viewer';
  return (
    <section aria-labelledby="dns-title">
      <h1 id="dns-title">DNS records</h1>
      <p class="muted">Zones: {zones.data ? [zones.data.forward, ...zones.data.reverse].join(', ') : '…'}. Records for machines and leases are made by metalbox itself.</p>
      {canEdit && <AddRecord domain={zones.data?.forward} onAdded={records.reload} />}
      <div class="card">
        <div class="page-head">
          <h2>Records <small class="muted">({records.data?.total ?? '…'})</small></h2>
          <label class="inline">Zone <select value={zone} onChange={(e) => setZone((e.currentTarget as HTMLSelectElement).value)}>
            <option value="">all</option>
            {zones.data && [zones.data.forward, ...zones.data.reverse].map((z) => <option value={z}>{z}</option>)}
          </select></label>
        </div>
        {records.error && <Notice kind="error">{records.error}</Notice>}
        {records.data?.items.length === 0 && <Empty>No records added by hand.</Empty>}
        {records.data && records.data.items.length > 0 && (
          <table class="table">
            <thead><tr><th scope="col">Name</th><th scope="col">Type</th><th scope="col">Value</th><th scope="col">TTL</th>{canEdit && <th scope="col"><span class="sr-only">Actions</span></th>}</tr></thead>
            <tbody>{records.data.items.map((r) => (
              <tr><td><code>{r.name}</code></td><td>{r.type}</td><td><code>{r.value}</code></td><td>{r.ttl ?? 'default'}</td>
                {canEdit && <td><button type="button" class="ghost" aria-label={`Remove ${r.type} ${r.name}`} onClick={() => { if (window.confirm(`Remove ${r.type} ${r.name}?`)) void del(`/api/v1/dns/records/${r.id}`).then(records.reload); }}>Remove</button></td>}</tr>
            ))}</tbody>
          </table>
        )}
      </div>
    </section>
  );
}

function AddRecord({ domain, onAdded }: { domain: string | undefined; onAdded: () => void }) {
  const form = useForm();
  const [name, setName] = useState('');
  const [type, setType] = useState('A');
  const [value, setValue] = useState('');
  const [ttl, setTtl] = useState('');
  const [priority, setPriority] = useState('10');
  const [weight, setWeight] = useState('0');
  const [port, setPort] = useState('');
  const [target, setTarget] = useState('');
  const structured = type === 'MX' || type === 'SRV';
  return (
    <form class="card inline-form" aria-labelledby="dns-add" onSubmit={(e) => {
      e.preventDefault();
      void form.submit(async () => {
        const fqdn = name.includes('.') || !domain ? name.trim() : `${name.trim()}.${domain}`;
        const body: Record<string, unknown> = { name: fqdn, type };
        if (structured) {
          body.priority = Number(priority); body.target = target.trim();
          if (type === 'SRV') { body.weight = Number(weight); body.port = Number(port); }
        } else body.value = value.trim();
        if (ttl.trim()) body.ttl = Number(ttl);
        await post('/api/v1/dns/records', body);
        setName(''); setValue(''); setTarget('');
        onAdded();
        return `Added ${type} ${fqdn}.`;
      }, ['name', 'type', 'value', 'ttl', 'priority', 'weight', 'port', 'target']);
    }}>
      <h2 id="dns-add">Add a record</h2>
      <TextField label="Name" name="name" form={form} value={name} onValue={setName} hint={domain ? `a bare name gets .${domain}` : undefined} required />
      <SelectField label="Type" name="type" form={form} value={type} onValue={setType} options={TYPES} />
      {!structured && <TextField label="Value" name="value" form={form} value={value} onValue={setValue} required />}
      {structured && <TextField label="Priority" name="priority" form={form} value={priority} onValue={setPriority} inputMode="numeric" />}
      {type === 'SRV' && <TextField label="Weight" name="weight" form={form} value={weight} onValue={setWeight} inputMode="numeric" />}
      {type === 'SRV' && <TextField label="Port" name="port" form={form} value={port} onValue={setPort} inputMode="numeric" />}
      {structured && <TextField label="Target" name="target" form={form} value={target} onValue={setTarget} />}
      <TextField label="TTL (seconds)" name="ttl" form={form} value={ttl} onValue={setTtl} inputMode="numeric" hint="empty: the server default" />
      <button type="submit" class="primary" disabled={form.busy}>Add record</button>
      <FormStatus form={form} />
    </form>
  );
}
