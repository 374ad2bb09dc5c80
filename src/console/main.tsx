// The metalbox web console: Preact, bundled by esbuild at build time (image/build-console.ts), served by the
// metalbox binary itself. Every datum comes from the REST API with the session cookie; nothing is fetched
// from anywhere else.
import './styles.css';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { get, onSessionEnded, post, setCsrf, type SessionInfo } from './api.tsx';
import { Link, navigate, useLocation } from './router.tsx';
import { LoginPage } from './pages/login.tsx';
import { DashboardPage } from './pages/dashboard.tsx';
import { MachinesPage } from './pages/machines.tsx';
import { MachinePage } from './pages/machine.tsx';
import { NetworkPage } from './pages/network.tsx';
import { DnsPage } from './pages/dns.tsx';
import { ImagesPage } from './pages/images.tsx';
import { BmcsPage } from './pages/bmcs.tsx';
import { UsersPage } from './pages/users.tsx';
import { SettingsPage } from './pages/settings.tsx';

const NAV: [string, string][] = [
  ['/dashboard', 'Dashboard'], ['/machines', 'Machines'], ['/network', 'Network'], ['/dns', 'DNS'], ['/images', 'Images'],
  ['/bmcs', 'BMCs'], ['/users', 'Users & tokens'], ['/settings', 'Settings'],
];

function App() {
  const { path } = useLocation();
  const [session, setSession] = useState<SessionInfo | null | undefined>(undefined);

  useEffect(() => {
    onSessionEnded(() => { setCsrf(undefined); setSession(null); });
    get<SessionInfo>('/api/v1/session').then((s) => { setCsrf(s.csrfToken); setSession(s); }, () => setSession(null));
  }, []);

  useEffect(() => {
    if (session === null && path !== '/login') navigate(`/login?next=${encodeURIComponent(path === '/' ? '/dashboard' : path)}`, true);
    if (session && (path === '/' || path === '/login')) navigate('/dashboard', true);
  }, [session, path]);

  useEffect(() => {
    const name = NAV.find(([p]) => path.startsWith(p))?.[1];
    document.title = name ? `${name} · metalbox` : 'metalbox';
  }, [path]);

  if (session === undefined) return <p class="boot-note">Loading…</p>;
  if (session === null || path === '/login') {
    return <LoginPage onLogin={(s) => { setCsrf(s.csrfToken); setSession(s); const next = new URLSearchParams(location.search).get('next'); navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/dashboard', true); }} />;
  }

  const logout = async () => {
    try { await post('/api/v1/logout'); } catch { /* the session may be gone already */ }
    setCsrf(undefined);
    setSession(null);
  };

  let page;
  const machine = /^\/machines\/([^/]+)$/.exec(path);
  if (machine) page = <MachinePage id={decodeURIComponent(machine[1]!)} role={session.user.role} />;
  else if (path.startsWith('/machines')) page = <MachinesPage role={session.user.role} />;
  else if (path.startsWith('/network')) page = <NetworkPage role={session.user.role} />;
  else if (path.startsWith('/dns')) page = <DnsPage role={session.user.role} />;
  else if (path.startsWith('/images')) page = <ImagesPage role={session.user.role} />;
  else if (path.startsWith('/bmcs')) page = <BmcsPage role={session.user.role} />;
  else if (path.startsWith('/users')) page = <UsersPage session={session} />;
  else if (path.startsWith('/settings')) page = <SettingsPage role={session.user.role} />;
  else page = <DashboardPage />;

  return (
    <div class="shell">
      <a class="skip" href="#main">Skip to content</a>
      <header class="top">
        <span class="brand">metalbox</span>
        <nav aria-label="Main">
          <ul>
            {NAV.map(([href, label]) => (
              <li><Link href={href} aria-current={path.startsWith(href) ? 'page' : undefined}>{label}</Link></li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <span>{session.user.username} <small>({session.user.role})</small></span>
          <button type="button" class="ghost" onClick={() => void logout()}>Log out</button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>{page}</main>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
