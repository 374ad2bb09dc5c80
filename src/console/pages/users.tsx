// Users (admin) and API tokens (everyone's own; an admin sees all). A new token's secret is shown once.
import { useState } from 'preact/hooks';
import { del, get, patch, post, type SessionInfo } from '../api.tsx';
import { Empty, FormStatus, Notice, SelectField, TextField, useForm, useLoad, when } from '../ui.tsx';

interface User { id: string; username: string; role: string; createdAt: string; passwordChangedAt: string }
interface Token { id: string; name: string; username: string; role: string; createdAt: string; expiresAt: string; lastUsedAt: string | null; expired: boolean }
const ROLES: [string, string][] = [['viewer', 'viewer: reads everything'], ['operator', 'operator: acts on machines'], ['admin', 'admin: changes the appliance']];

export function UsersPage({ session }: { session: SessionInfo }) {
  const admin = session.user.role === 'admin';
  return (
    <section aria-labelledby="users-title">
      <h1 id="users-title">Users and tokens</h1>
      {admin ? <Users me={session.user.username} /> : <p class="muted">Only an admin manages users. You are {session.user.username} ({session.user.role}).</p>}
      <Tokens role={session.user.role} />
    </section>
  );
}

function Users({ me }: { me: string }) {
  const users = useLoad(() => get<{ users: User[] }>('/api/v1/users').then((r) => r.users));
  const form = useForm();
  const [username, setUsername] = useState('');
  const [role, setRole] = useState('operator');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | undefined>();
  const act = (p: Promise<unknown>) => { setError(undefined); void p.then(users.reload, (e: unknown) => setError((e as Error).message)); };
  return (
    <>
      <form class="card inline-form" aria-labelledby="user-add" onSubmit={(e) => {
        e.preventDefault();
        void form.submit(async () => {
          await post('/api/v1/users', { username: username.trim(), role, password });
          setUsername(''); setPassword('');
          users.reload();
          return `User ${username} added.`;
        }, ['username', 'role', 'password']);
      }}>
        <h2 id="user-add">Add a user</h2>
        <TextField label="User name" name="username" form={form} value={username} onValue={setUsername} autoComplete="off" required />
        <SelectField label="Role" name="role" form={form} value={role} onValue={setRole} options={ROLES} />
        <TextField label="Password" name="password" type="password" form={form} value={password} onValue={setPassword} autoComplete="new-password" required />
        <button type="submit" class="primary" disabled={form.busy}>Add user</button>
        <FormStatus form={form} />
      </form>
      <div class="card">
        <h2>Users</h2>
        {(users.error ?? error) && <Notice kind="error">{users.error ?? error}</Notice>}
        {users.data && (
          <table class="table">
            <thead><tr><th scope="col">User</th><th scope="col">Role</th><th scope="col">Since</th><th scope="col">Password changed</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
            <tbody>{users.data.map((u) => (
              <tr><td>{u.username}{u.username === me ? ' (you)' : ''}</td>
                <td><select aria-label={`Role of ${u.username}`} value={u.role} onChange={(e) => act(patch(`/api/v1/users/${u.id}`, { role: (e.currentTarget as HTMLSelectElement).value }))}>
                  {ROLES.map(([r]) => <option value={r}>{r}</option>)}</select></td>
                <td>{when(u.createdAt)}</td><td>{when(u.passwordChangedAt)}</td>
                <td>{u.username !== me && <button type="button" class="ghost" aria-label={`Delete user ${u.username}`} onClick={() => { if (window.confirm(`Delete ${u.username}, their sessions and API tokens?`)) act(del(`/api/v1/users/${u.id}`)); }}>Delete</button>}</td></tr>
            ))}</tbody>
          </table>
        )}
      </div>
    </>
  );
}

function Tokens({ role }: { role: string }) {
  const tokens = useLoad(() => get<{ tokens: Token[] }>('/api/v1/tokens').then((r) => r.tokens));
  const form = useForm();
  const [name, setName] = useState('');
  const [tokenRole, setTokenRole] = useState('');
  const [days, setDays] = useState('');
  const [secret, setSecret] = useState<string | undefined>();
  return (
    <>
      <form class="card inline-form" aria-labelledby="tok-add" onSubmit={(e) => {
        e.preventDefault();
        void form.submit(async () => {
          const r = await post<{ token: string }>('/api/v1/tokens', { name: name.trim(), ...(tokenRole ? { role: tokenRole } : {}), ...(days.trim() ? { expiresInDays: Number(days) } : {}) });
          setSecret(r.token); setName('');
          tokens.reload();
          return 'Token made: copy it now, it is not shown again.';
        }, ['name', 'role', 'expiresInDays']);
      }}>
        <h2 id="tok-add">Make an API token</h2>
        <TextField label="What it is for" name="name" form={form} value={name} onValue={setName} required />
        <SelectField label="Role" name="role" form={form} value={tokenRole} onValue={setTokenRole} options={[['', `yours (${role})`], ...ROLES.filter(([r]) => r === 'viewer' || (r === 'operator' && role !== 'viewer') || role === 'admin')]} />
        <TextField label="Expires in days" name="expiresInDays" form={form} value={days} onValue={setDays} inputMode="numeric" hint="empty: the default" />
        <button type="submit" class="primary" disabled={form.busy}>Make token</button>
        <FormStatus form={form} />
        {secret && <div class="secret"><label for="tok-secret">The token (shown once)</label><input id="tok-secret" readOnly value={secret} onFocus={(e) => (e.currentTarget as HTMLInputElement).select()} /></div>}
      </form>
      <div class="card">
        <h2>API tokens</h2>
        {tokens.error && <Notice kind="error">{tokens.error}</Notice>}
        {tokens.data?.length === 0 && <Empty>No API tokens.</Empty>}
        {tokens.data && tokens.data.length > 0 && (
          <table class="table">
            <thead><tr><th scope="col">Name</th><th scope="col">Owner</th><th scope="col">Role</th><th scope="col">Expires</th><th scope="col">Last used</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
            <tbody>{tokens.data.map((t) => (
              <tr><td>{t.name}</td><td>{t.username}</td><td>{t.role}</td><td>{t.expired ? 'expired' : when(t.expiresAt)}</td><td>{t.lastUsedAt ? when(t.lastUsedAt) : 'never'}</td>
                <td><button type="button" class="ghost" aria-label={`Revoke token ${t.name}`} onClick={() => { if (window.confirm(`Revoke ${t.name}?`)) void del(`/api/v1/tokens/${t.id}`).then(tokens.reload); }}>Revoke</button></td></tr>
            ))}</tbody>
          </table>
        )}
      </div>
    </>
  );
}
