// BMCs: every registered BMC with its power state and health; test one, remove one, register one (admin).
import { useState } from 'preact/hooks';
import type { ApiError} from '../api.tsx';
import { del, get, post } from '../api.tsx';
import { Link } from '../router.tsx';
import { Empty, FormStatus, Notice, SelectField, TextField, useForm, useLoad, when } from '../ui.tsx';
import type { Bmc } from './machine.tsx';

export function BmcsPage({ role }: { role: string }) {
  const bmcs = useLoad(() => get<{ items: Bmc[] }>('/api/v1/bmcs').then((r) => r.items));
  const [note, setNote] = useState<{ kind: 'ok' | 'error'; text: string } | undefined>();
  const test = async (b: Bmc) => {
    setNote(undefined);
    try {
      const r = await post<{ powerState: string; ms: number }>(`/api/v1/bmcs/${b.id}/test`);
      setNote({ kind: 'ok', text: `${b.address}: logged in, power ${r.powerState} (${r.ms} ms).` });
    } catch (err) {
      setNote({ kind: 'error', text: `${b.address}: ${(err as ApiError).message} (${(err as ApiError).code})` });
    }
    bmcs.reload();
  };
  return (
    <section aria-labelledby="bmc-title">
      <h1 id="bmc-title">BMCs</h1>
      {role === 'admin' && <AddBmc onAdded={bmcs.reload} />}
      {note && <Notice kind={note.kind}>{note.text}</Notice>}
      <div class="card">
        <h2>Registered BMCs <small class="muted">({bmcs.data?.length ?? '…'})</small></h2>
        {bmcs.error && <Notice kind="error">{bmcs.error}</Notice>}
        {bmcs.data?.length === 0 && <Empty>No BMCs are registered.</Empty>}
        {bmcs.data && bmcs.data.length > 0 && (
          <table class="table">
            <thead><tr><th scope="col">Address</th><th scope="col">Driver</th><th scope="col">Machine</th><th scope="col">Power</th><th scope="col">Health</th><th scope="col">Last poll</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
            <tbody>{bmcs.data.map((b) => (
              <tr><td><code>{b.address}{b.port ? `:${b.port}` : ''}</code></td><td>{b.driver}</td>
                <td>{b.machineId ? <Link href={`/machines/${b.machineId}`}>{b.machineId}</Link> : '—'}</td>
                <td>{b.powerState}</td>
                <td>{b.unreachable ? <span class="bad-text">unreachable</span> : b.lastError ? <span class="warn-text">{b.lastError.code}</span> : 'ok'}{b.pending.length > 0 ? `; waiting: ${b.pending.map((p) => p.request).join(', ')}` : ''}</td>
                <td>{when(b.lastPolledAt)}</td>
                <td class="row-actions">
                  {role !== 'viewer' && <button type="button" onClick={() => void test(b)}>Test</button>}
                  {role === 'admin' && <button type="button" class="ghost" aria-label={`Remove BMC ${b.address}`} onClick={() => { if (window.confirm(`Remove BMC ${b.address}?`)) void del(`/api/v1/bmcs/${b.id}`).then(bmcs.reload); }}>Remove</button>}
                </td></tr>
            ))}</tbody>
          </table>
        )}
      </div>
    </section>
  );
}

function AddBmc({ onAdded }: { onAdded: () => void }) {
  const form = useForm();
  const [driver, setDriver] = useState('ipmi');
  const [address, setAddress] = useState('');
  const [port, setPort] = useState('');
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [machineId, setMachineId] = useState('');
  const creds = driver === 'ipmi' || driver === 'redfish';
  return (
    <form class="card inline-form" aria-labelledby="bmc-add" onSubmit={(e) => {
      e.preventDefault();
      void form.submit(async () => {
        await post('/api/v1/bmcs', {
          driver, address: address.trim(),
          ...(port.trim() ? { port: Number(port) } : {}),
          ...(creds && username ? { username } : {}), ...(creds && password ? { password } : {}),
          ...(machineId.trim() ? { machineId: machineId.trim() } : {}),
        });
        setPassword('');
        onAdded();
        return `BMC ${address} registered.`;
      }, ['driver', 'address', 'port', 'username', 'password', 'machineId']);
    }}>
      <h2 id="bmc-add">Register a BMC</h2>
      <SelectField label="Driver" name="driver" form={form} value={driver} onValue={setDriver} options={[['ipmi', 'IPMI over LAN'], ['redfish', 'Redfish'], ['wol', 'Wake-on-LAN'], ['manual', 'manual (an operator)']]} />
      <TextField label="Address" name="address" form={form} value={address} onValue={setAddress} hint={driver === 'wol' ? 'the machine\'s MAC' : driver === 'manual' ? 'where the machine is' : 'host or IPv4'} required />
      {(driver === 'ipmi' || driver === 'redfish') && <TextField label="Port" name="port" form={form} value={port} onValue={setPort} inputMode="numeric" />}
      {creds && <TextField label="User" name="username" form={form} value={username} onValue={setUsername} autoComplete="off" />}
      {creds && <TextField label="Password" name="password" type="password" form={form} value={password} onValue={setPassword} autoComplete="new-password" hint="stored sealed; never shown again" />}
      <TextField label="Machine id" name="machineId" form={form} value={machineId} onValue={setMachineId} hint="the machine it powers" />
      <button type="submit" class="primary" disabled={form.busy}>Register BMC</button>
      <FormStatus form={form} />
    </form>
  );
}
