// Login: user name and password for a session (POST /api/v1/login sets the HttpOnly session cookie).
import { useState } from 'preact/hooks';
import { post, type SessionInfo } from '../api.tsx';
import { FormStatus, TextField, useForm } from '../ui.tsx';

export function LoginPage({ onLogin }: { onLogin: (s: SessionInfo) => void }) {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const form = useForm();
  return (
    <main class="login" id="main">
      <form class="card login-card" aria-labelledby="login-title" onSubmit={(e) => {
        e.preventDefault();
        void form.submit(async () => { onLogin(await post<SessionInfo>('/api/v1/login', { username, password })); }, ['username', 'password']);
      }}>
        <h1 id="login-title">metalbox</h1>
        <p class="muted">Log in to run the rack.</p>
        <TextField label="User name" name="username" form={form} value={username} onValue={setUsername} autoComplete="username" required autoFocus />
        <TextField label="Password" name="password" type="password" form={form} value={password} onValue={setPassword} autoComplete="current-password" required />
        {form.formError && <FormStatus form={form} />}
        <button type="submit" class="primary" disabled={form.busy}>{form.busy ? 'Logging in…' : 'Log in'}</button>
      </form>
    </main>
  );
}
