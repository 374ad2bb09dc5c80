// Settings: the dotted keys of the store's settings (the same ones `metalbox settings` reads and writes).
import { useState } from 'preact/hooks';
import { del, get, put } from '../api.tsx';
import { Empty, FormStatus, Notice, TextField, useForm, useLoad } from '../ui.tsx';

interface Setting { key: string; value: unknown }

export function SettingsPage({ role }: { role: string }) {
  const settings = useLoad(() => get<{ items: Setting[] }>('/api/v1/settings').then((r) => r.items));
  const form = useForm();
  const [key, setKey] = useState('');
  const [value, setValue] = useState('');
  const admin = role === 'admin';
  return (
    <section aria-labelledby="set-title">
      <h1 id="set-title">Settings</h1>
      {admin && (
        <form class="card inline-form" aria-labelledby="set-edit" onSubmit={(e) => {
          e.preventDefault();
          void form.submit(async () => {
            let v: unknown;
            try { v = JSON.parse(value); } catch { v = value; }
            await put(`/api/v1/settings/${encodeURIComponent(key.trim())}`, { value: v });
            settings.reload();
            return `${key} set.`;
          }, ['key', 'value']);
        }}>
          <h2 id="set-edit">Set a value</h2>
          <TextField label="Key" name="key" form={form} value={key} onValue={setKey} placeholder="deploy.defaultImage" required />
          <TextField label="Value" name="value" form={form} value={value} onValue={setValue} hint="JSON, or plain text" />
          <button type="submit" class="primary" disabled={form.busy}>Save</button>
          <FormStatus form={form} />
        </form>
      )}
      <div class="card">
        <h2>Settings</h2>
        {settings.error && <Notice kind="error">{settings.error}</Notice>}
        {settings.data?.length === 0 && <Empty>No settings.</Empty>}
        {settings.data && settings.data.length > 0 && (
          <table class="table">
            <thead><tr><th scope="col">Key</th><th scope="col">Value</th>{admin && <th scope="col"><span class="sr-only">Actions</span></th>}</tr></thead>
            <tbody>{settings.data.map((s) => (
              <tr><td><code>{s.key}</code></td><td><code class="wrap">{JSON.stringify(s.value)}</code></td>
                {admin && <td class="row-actions">{!s.key.startsWith('system.') && <>
                  <button type="button" onClick={() => { setKey(s.key); setValue(typeof s.value === 'string' ? s.value : JSON.stringify(s.value)); }}>Edit</button>
                  <button type="button" class="ghost" aria-label={`Delete ${s.key}`} onClick={() => { if (window.confirm(`Delete ${s.key}?`)) void del(`/api/v1/settings/${encodeURIComponent(s.key)}`).then(settings.reload); }}>Delete</button></>}</td>}</tr>
            ))}</tbody>
          </table>
        )}
      </div>
    </section>
  );
}
