// The web console in a real browser: Debian's Chromium driven by playwright-core against a whole metalbox app
// (LevelDB store with 10,000 machines, HTTPS on 127.0.0.1) serving the console it builds from src/console.
//
// Covers: login (a wrong password refused, then the admin); the dashboard; the machine list with 10,000
// machines (first render time measured and printed, virtual scrolling to the middle and the end, keyboard
// navigation); a machine changing state live while its page is open; a power action and the deploy form
// round-tripping to the server; an API refusal shown at its field; an image added from uploaded files with a
// progress bar per file; no Content-Security-Policy violation;
// a screenshot of each main page in test-artifacts/console/.
import t from 'tap';
import type { Page } from 'playwright-core';
import { ensureConsole } from '../../image/build-console.ts';
import { launchBrowser, screenshot, type Browser } from '../helpers/browser.ts';
import { ADMIN, startConsoleApp, type ConsoleApp } from '../helpers/console-app.ts';

const MACHINES = 10_000;
const ROW_H = 36;

let app: ConsoleApp;
let browser: Browser;
let page: Page;
const cspViolations: string[] = [];
const pageErrors: string[] = [];
const shots: string[] = [];

t.before(async () => {
  await ensureConsole((l) => t.comment(l));
  const t0 = performance.now();
  app = await startConsoleApp({ machines: MACHINES });
  t.comment(`app with ${app.registry.size} machines at ${app.url} in ${Math.round(performance.now() - t0)} ms`);
  browser = await launchBrowser();
  page = browser.page;
  page.setDefaultTimeout(20_000);
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  // Confirmation prompts (bulk actions, power off) are accepted.
  page.on('dialog', (d) => void d.accept());
});

t.teardown(async () => {
  await browser?.close();
  await app?.stop();
  if (shots.length > 0) process.stderr.write(`console: screenshots:\n${shots.map((s) => `  ${s}`).join('\n')}\n`);
});

async function shot(name: string): Promise<void> {
  shots.push(await screenshot(page, name));
}

t.test('login: the console is served with its CSP; a wrong password is refused; the admin gets in', async (t) => {
  const res = await page.goto(`${app.url}/`);
  t.equal(res?.status(), 200);
  const csp = res?.headers()['content-security-policy'] ?? '';
  t.match(csp, /script-src 'self'/, 'a strict CSP');
  t.notMatch(csp, /unsafe-inline/, 'no inline script or style allowed');
  await page.waitForURL(/\/login/);
  await page.getByLabel('User name').fill(ADMIN.username);
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Log in' }).click();
  await t.resolves(page.getByRole('alert').filter({ hasText: 'wrong user name or password' }).waitFor(), 'the refusal is shown');
  await shot('login');
  await page.getByLabel('Password').fill(ADMIN.password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.waitForURL(/\/dashboard$/);
  t.pass('logged in');
});

t.test('dashboard: services, machines by state, pools, recent events', async (t) => {
  await page.locator('[data-service="dhcp"]').waitFor();
  t.equal(await page.locator('.services > li').count(), 6, 'DHCP, TFTP, HTTP boot, DNS, NTP, BMC poller');
  t.match(await page.locator('[data-service="http-boot"]').innerText(), /running/i);
  t.match(await page.locator('[data-service="dhcp"]').innerText(), /off/i, 'not running here: off');
  await page.getByRole('img', { name: /Machines by state/ }).waitFor();
  t.match(await page.getByRole('img', { name: /Machines by state/ }).getAttribute('aria-label') ?? '', /Deployed 2,\d{3}/, 'the chart says its numbers');
  t.match(await page.getByRole('img', { name: /Pool usage per subnet/ }).getAttribute('aria-label') ?? '', /10\.77\.0\.0\/24 0% \(0 of 100\)/);
  await page.getByRole('cell', { name: 'machine.state' }).first().waitFor();
  await shot('dashboard');
});

t.test('machines: 10,000 machines load, render fast, scroll, and work from the keyboard', async (t) => {
  // A fresh page load of the list: the first render is timed from navigation start by the page itself.
  const started = performance.now();
  await page.goto(`${app.url}/machines`);
  await page.locator('.vspacer > .vrow[data-id]').first().waitFor();
  const wallMs = performance.now() - started;
  // Evaluated in the page (a string: this file is type-checked without the DOM library).
  const markMs = await page.evaluate<number>(`new Promise((resolve) => {
    const find = () => {
      const m = performance.getEntriesByName('mbx:machines:first-rows')[0];
      if (m) resolve(m.startTime); else requestAnimationFrame(find);
    };
    find();
  })`);
  t.comment(`FIRST RENDER of the machine list with ${MACHINES.toLocaleString('en')} machines: ${Math.round(markMs)} ms from navigation start (page), ${Math.round(wallMs)} ms wall clock from goto`);
  process.stderr.write(`console: machine list first render with ${MACHINES} machines: ${Math.round(markMs)} ms (navigation start to first rows), ${Math.round(wallMs)} ms wall\n`);
  t.ok(markMs < 10_000, 'first rows within 10 s even on a loaded machine');
  t.equal(await page.getByTestId('machine-count').innerText(), '10,000 machines');
  const domRows = await page.locator('.vspacer > .vrow').count();
  t.ok(domRows > 10 && domRows < 80, `virtual: ${domRows} rows in the DOM, not 10,000`);
  await shot('machines');

  // Scroll to the middle, then to the very end: the rows there load and render.
  const scrollTo = async (index: number) => {
    const t0 = performance.now();
    await page.getByTestId('machine-viewport').evaluate((el, top) => { el.scrollTop = top; }, index * ROW_H);
    await page.locator(`.vrow[data-index="${index}"][data-id]`).waitFor();
    return Math.round(performance.now() - t0);
  };
  t.comment(`scrolled to row 5,000 in ${await scrollTo(5000)} ms, to row 9,999 in ${await scrollTo(MACHINES - 1)} ms`);
  t.match(await page.locator(`.vrow[data-index="${MACHINES - 1}"] .c-host`).innerText(), /^r0249-n3[0-9]$/, 'the last machine by host name');

  // Filters are the server's: state=Broken.
  await page.getByRole('button', { name: 'Broken', exact: true }).click();
  await page.waitForURL(/state=Broken/);
  await page.getByTestId('machine-count').filter({ hasText: /^8\d\d machines$/ }).waitFor();
  t.equal(await page.locator('.vspacer > .vrow[data-id] .badge').first().innerText(), 'Broken');
  await page.getByRole('button', { name: 'Clear filters' }).click();
  await page.getByTestId('machine-count').filter({ hasText: '10,000 machines' }).waitFor();

  // Keyboard: Tab reaches the rows; arrows move; Enter opens.
  const first = page.locator('.vrow[data-index="0"]');
  await first.focus();
  for (const want of ['1', '2']) {
    await page.keyboard.press('ArrowDown');
    await page.locator(`.vrow[data-index="${want}"]:focus`).waitFor();
  }
  t.pass('arrow keys move the focus');
  const id = await page.locator('.vrow[data-index="2"]').getAttribute('data-id');
  await page.keyboard.press('Enter');
  await page.waitForURL(new RegExp(`/machines/${id}$`));
  t.pass('Enter opens the machine');
});

t.test('bulk: select two machines and commission them', async (t) => {
  await page.goto(`${app.url}/machines?q=aaa`);
  await page.getByTestId('machine-count').filter({ hasText: '3 machines' }).waitFor();
  await page.getByLabel('Select aaa-live').check();
  await page.getByRole('button', { name: 'Commission', exact: true }).click();
  await page.getByRole('status').filter({ hasText: 'Commission: 1 of 1 done' }).waitFor();
  t.equal(app.registry.get(app.targets.live.id)!.state, 'Commissioning', 'the server did it');
  // and back, so the live test below starts from New
  await app.registry.act(app.targets.live.id, 'abort', { actor: 'test' });
});

t.test('machine page: the state changes live while the page is open', async (t) => {
  await page.goto(`${app.url}/machines/${app.targets.live.id}`);
  await page.getByTestId('machine-state').filter({ hasText: 'New' }).waitFor();
  await page.getByText('No inventory yet').waitFor();
  // Wait until the page's event stream is connected (its first bytes: the retry line), then change the machine behind its back.
  await page.waitForTimeout(500);
  const t0 = performance.now();
  await app.registry.act(app.targets.live.id, 'commission', { actor: 'someone-else', reason: 'from the test' });
  await page.getByTestId('machine-state').filter({ hasText: 'Commissioning' }).waitFor({ timeout: 10_000 });
  t.comment(`the page showed the new state ${Math.round(performance.now() - t0)} ms after the change`);
  await page.getByTestId('events').getByText('New → Commissioning (commission): from the test').waitFor();
  t.pass('state, reason and events updated without a reload');
});

t.test('machine page: a power action round-trips through the BMC service', async (t) => {
  await page.goto(`${app.url}/machines/${app.targets.power.id}`);
  const card = page.getByTestId('power-card');
  await card.getByText('manual').waitFor();
  await card.getByRole('button', { name: 'Power on' }).click();
  await card.getByRole('status').filter({ hasText: /Power on: requested/ }).waitFor();
  const view = await app.bmc.get(app.targets.power.id);
  t.match(view?.pending.map((p) => p.request) ?? [], ['on'], 'the manual BMC holds the request for the operator');
  await shot('machine');
});

t.test('deploy form: an API refusal is shown at its field, then the deploy goes through', async (t) => {
  await page.goto(`${app.url}/machines/${app.targets.deploy.id}`);
  await page.getByTestId('machine-state').filter({ hasText: 'Ready' }).waitFor();
  await page.getByRole('button', { name: 'Deploy…' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByLabel('Disk').fill('not a disk!');
  await dialog.getByLabel('SSH public keys').fill('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIConsoleTestKey test@console');
  await dialog.getByRole('button', { name: 'Deploy' }).click();
  const err = dialog.locator('.field-error[data-field="disk"]');
  await err.waitFor();
  t.match(await err.innerText(), /must match pattern/, 'the API\'s words, next to the Disk field');
  t.equal(await dialog.getByLabel('Disk').getAttribute('aria-invalid'), 'true', 'the field is marked invalid');
  t.ok((await dialog.getByLabel('Disk').getAttribute('aria-describedby'))?.split(' ').includes((await err.getAttribute('id'))!), 'and described by the error');
  t.equal(app.registry.get(app.targets.deploy.id)!.state, 'Ready', 'nothing happened on the server');
  await shot('deploy-error');

  await dialog.getByLabel('Disk').fill('/dev/sda');
  await dialog.getByRole('button', { name: 'Deploy' }).click();
  await page.getByTestId('machine-state').filter({ hasText: 'Deploying' }).waitFor();
  const m = app.registry.get(app.targets.deploy.id)!;
  t.equal(m.state, 'Deploying');
  const d = m.deployment as { disk: string; sshKeys: string[]; requestedBy: string };
  t.same([d.disk, d.sshKeys, d.requestedBy], ['/dev/sda', ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIConsoleTestKey test@console'], ADMIN.username], 'the form reached the server whole');
});

t.test('the other pages render (screenshots)', async (t) => {
  const pages: [string, string, string][] = [
    ['network', '/network', '10.77.0.0/24'], ['dns', '/dns', 'Add a record'], ['images', '/images', 'Registered images'],
    ['bmcs', '/bmcs', 'rack 1, slot 3'], ['users', '/users', 'Make an API token'], ['settings', '/settings', 'Set a value'],
  ];
  for (const [name, path, text] of pages) {
    await page.goto(`${app.url}${path}`);
    await page.getByText(text).first().waitFor();
    await shot(name);
    t.pass(`${path} shows ${text}`);
  }
  // A DNS refusal from the core (not the schema) lands at its field too.
  await page.goto(`${app.url}/dns`);
  await page.getByLabel('Name', { exact: true }).fill('web');
  await page.getByLabel('Value', { exact: true }).fill('not-an-address');
  await page.getByRole('button', { name: 'Add record' }).click();
  await page.locator('.field-error[data-field="value"]').waitFor();
  t.pass('the DNS value refusal is at the Value field');
});

t.test('images: a file upload with a progress bar per file, then the image in the list', async (t) => {
  await page.goto(`${app.url}/images`);
  const form = page.getByRole('form', { name: 'Add an image from files' });
  await form.getByLabel('Image name').fill('uploaded-e2e');
  const kernel = Buffer.alloc(200_000, 1);
  await form.getByLabel('Kernel file', { exact: true }).setInputFiles({ name: 'vmlinuz', mimeType: 'application/octet-stream', buffer: kernel });
  await form.getByLabel('Initrd file', { exact: true }).setInputFiles({ name: 'initrd.img', mimeType: 'application/octet-stream', buffer: Buffer.from('initrd') });
  await form.getByRole('button', { name: 'Upload and add' }).click();
  const bar = form.getByRole('progressbar', { name: 'Uploading kernel file' });
  await bar.waitFor();
  await form.getByRole('progressbar', { name: 'Uploading initrd file' }).waitFor();
  t.equal(await bar.getAttribute('max'), String(kernel.length), 'the bar knows the size');
  await page.getByRole('row').filter({ hasText: 'uploaded-e2e' }).filter({ hasText: 'upload:vmlinuz' }).waitFor();
  t.equal(await bar.getAttribute('value'), String(kernel.length), 'and ends full');
  const image = await app.assets.get('uploaded-e2e');
  t.equal(image?.files.kernel.size, kernel.length, 'registered on the server');
  await shot('images-upload');

  // A refusal of the registration lands at its field: the name is taken now.
  await form.getByLabel('Kernel file', { exact: true }).setInputFiles({ name: 'vmlinuz', mimeType: 'application/octet-stream', buffer: Buffer.from('k') });
  await form.getByLabel('Initrd file', { exact: true }).setInputFiles({ name: 'initrd.img', mimeType: 'application/octet-stream', buffer: Buffer.from('i') });
  await form.getByRole('button', { name: 'Upload and add' }).click();
  await form.locator('.field-error[data-field="name"]').waitFor();
  t.pass('IMAGE_EXISTS is shown at the name field');
});

t.test('no CSP violation and no script error on any page', async (t) => {
  t.same(cspViolations, [], 'the CSP never had to block anything');
  t.same(pageErrors, [], 'no uncaught script error');
});
