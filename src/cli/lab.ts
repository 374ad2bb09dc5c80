// `metalbox lab up|down|status`: the virtual rack of src/lab/rack.ts from the command line. `up` finds or builds
// what the rack boots (the ephemeral environment with the agent, the deployable test image, this program as a
// single binary for the agent to download) from the source tree it runs from, unless given files.
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { isSingleBinary } from '../lib/addon.ts';
import { MetalboxError } from '../lib/errors.ts';
import { labDown, labUp, readLabState, type LabImages } from '../lab/rack.ts';
import type { CliIo } from './commands.ts';

export const LAB_USAGE = `usage: metalbox lab up [--machines N] [--dir DIR] [--name NAME] [--port PORT] [--memory MIB] [--disk GIB] [--net N]
                     [--ephemeral-kernel FILE --ephemeral-initrd FILE] [--no-deploy-image] [--no-register] [--kvm]
       metalbox lab status [--dir DIR]
       metalbox lab down [--dir DIR] [--purge]

A virtual rack on this host (root; qemu-system-x86, ipxe-qemu, openipmi, socat, iproute2): N QEMU machines behind
ipmi_sim BMCs in a network namespace, with metalbox serving them. The machines are registered by their BMCs and
enlist on their own; deploy them from the console or the API. Defaults: 2 machines, dir ./.metalbox-lab,
name mbxlab, console on https://127.0.0.1:5443, 1024 MiB and 8 GiB per machine, networks 10.250.0.0/24
(provisioning) and 10.251.0.0/24 (BMCs), TCG (software emulation; --kvm for KVM).
`;

/** The source tree this program runs from (image/ builders), when it is not the single binary. */
function sourceTree(): string | undefined {
  if (isSingleBinary()) return undefined;
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
  return existsSync(join(root, 'image/ephemeral/build.sh')) ? root : undefined;
}

/** Runs one of image/'s cached builders; its `name=value` stdout lines. */
function runBuilder(script: string, args: string[], io: CliIo): Promise<Record<string, string>> {
  return new Promise((resolveP, reject) => {
    const child = execFile('bash', [script, ...args], { maxBuffer: 16 << 20, timeout: 1_800_000 }, (err, stdout, stderr) => {
      if (err) { reject(new MetalboxError('LAB_FAILED', `${script}: ${err.message}\n${stderr.split('\n').slice(-10).join('\n')}`)); return; }
      const out: Record<string, string> = {};
      for (const line of stdout.split('\n')) { const i = line.indexOf('='); if (i > 0) out[line.slice(0, i)] = line.slice(i + 1); }
      resolveP(out);
    });
    child.stderr?.on('data', (d: Buffer) => { for (const l of d.toString().split('\n')) if (/^(ephemeral|deploy-test):/.test(l)) io.err(`  ${l}\n`); });
  });
}

/** `self`: this program's own command line (main knows it); the lab runs `metalbox serve` and `images add` with it. */
export async function runLab(argv: string[], env: NodeJS.ProcessEnv, io: CliIo, self: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: {
        machines: { type: 'string' }, dir: { type: 'string' }, name: { type: 'string' }, port: { type: 'string' },
        memory: { type: 'string' }, disk: { type: 'string' }, net: { type: 'string' },
        'ephemeral-kernel': { type: 'string' }, 'ephemeral-initrd': { type: 'string' },
        'no-deploy-image': { type: 'boolean' }, 'no-register': { type: 'boolean' }, kvm: { type: 'boolean' }, purge: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    io.err(`metalbox: CLI_USAGE: ${(err as Error).message}\n\n${LAB_USAGE}`);
    return 2;
  }
  const v = parsed.values;
  const [sub, ...rest] = parsed.positionals;
  if (v.help || sub === undefined || sub === 'help') { io.out(LAB_USAGE); return sub === undefined && !v.help ? 2 : 0; }
  const dir = resolve(v.dir ?? env.METALBOX_LAB_DIR ?? '.metalbox-lab');
  const int = (name: string, text: string | undefined, dflt: number): number => {
    if (text === undefined) return dflt;
    if (!/^\d+$/.test(text)) throw new MetalboxError('CLI_USAGE', `--${name} must be a whole number`);
    return Number(text);
  };
  try {
    if (rest.length > 0) throw new MetalboxError('CLI_USAGE', `lab ${sub}: unexpected ${rest.join(' ')}`);
    if (sub === 'down') {
      const { stopped } = await labDown(dir, { purge: v.purge === true, ...(v.name ? { name: v.name } : {}) });
      io.out(`lab down: stopped ${stopped.join(', ') || 'nothing (it was not running)'}${v.purge ? `; removed ${dir}` : ''}\n`);
      return 0;
    }
    if (sub === 'status') {
      const s = readLabState(dir);
      if (!s) { io.err(`no lab in ${dir}\n`); return 1; }
      io.out(`${JSON.stringify({ ...s, machines: s.machines.map((m) => ({ ...m, bmc: { ...m.bmc, password: '(in lan.conf)' } })) }, null, 2)}\n`);
      return 0;
    }
    if (sub !== 'up') throw new MetalboxError('CLI_USAGE', `unknown lab command "${sub}"`);

    const tree = sourceTree();
    const images = await labImages(v, tree, io);
    if (tree && !existsSync(join(tree, 'dist/metalbox'))) {
      // The agent is this program as a single binary (served at /boot/agent/metalbox); built once.
      io.err('building dist/metalbox (the agent the machines download) ...\n');
      const r = spawnSync(process.execPath, ['--import', 'tsx', join(tree, 'image/build-binary.ts')], { cwd: tree, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
      if (r.status !== 0) throw new MetalboxError('LAB_FAILED', `building dist/metalbox: ${r.stderr}`);
    }
    const lab = await labUp({
      dir, name: v.name ?? 'mbxlab', machines: int('machines', v.machines, 2), memoryMiB: int('memory', v.memory, 1024), diskGiB: int('disk', v.disk, 8),
      net: int('net', v.net, 250), port: int('port', v.port, 5443), images, metalbox: self, register: v['no-register'] !== true, kvm: v.kvm === true,
      log: (line) => io.err(`${line}\n`),
    });
    const s = lab.state;
    io.out([
      `lab ${s.name} is up: ${s.machines.length} machine(s) on ${s.provisioning}, metalbox at ${s.server}`,
      `  console     ${s.url}   (certificate SHA-256 ${s.fingerprint})`,
      `  admin       ${s.admin.username}, password in ${s.admin.passwordFile}`,
      `  API         metalbox login --url ${s.url} --user ${s.admin.username} --password-file ${s.admin.passwordFile} --fingerprint ${s.fingerprint}`,
      `  machines    ${s.machines.map((m) => `${m.name} (${m.mac}, BMC ${m.bmc.address})`).join(', ')}`,
      `  logs        ${join(s.dir, 'metalbox.log')}, serial consoles in ${join(s.dir, 'm*/serial.log')}`,
      `  stop it     metalbox lab down${v.dir ? ` --dir ${v.dir}` : ''}`,
      '',
    ].join('\n'));
    return 0;
  } catch (err) {
    if (!(err instanceof MetalboxError)) throw err;
    io.err(`metalbox: ${err.code}: ${err.message}\n`);
    return err.code === 'CLI_USAGE' ? 2 : 1;
  }
}

async function labImages(v: Record<string, string | boolean | undefined>, tree: string | undefined, io: CliIo): Promise<LabImages> {
  const kernel = v['ephemeral-kernel'] as string | undefined;
  const initrd = v['ephemeral-initrd'] as string | undefined;
  if ((kernel === undefined) !== (initrd === undefined)) throw new MetalboxError('CLI_USAGE', '--ephemeral-kernel and --ephemeral-initrd go together');
  let ephemeral: LabImages['ephemeral'];
  if (kernel && initrd) ephemeral = { kernel: resolve(kernel), initrd: resolve(initrd) };
  else {
    if (!tree) throw new MetalboxError('CLI_USAGE', 'give --ephemeral-kernel and --ephemeral-initrd (image/ephemeral/build.sh --agent makes them)');
    io.err('the ephemeral environment (image/ephemeral/build.sh --agent; cached after the first build) ...\n');
    const out = await runBuilder(join(tree, 'image/ephemeral/build.sh'), ['--agent'], io);
    ephemeral = { kernel: out.kernel!, initrd: out.initrd! };
  }
  if (v['no-deploy-image'] || !tree) return { ephemeral };
  io.err('the deployable test image (image/deploy-test/build.sh; a first build takes minutes) ...\n');
  const out = await runBuilder(join(tree, 'image/deploy-test/build.sh'), [], io);
  if (!out.image || !out.kernel || !out.initrd) throw new MetalboxError('LAB_FAILED', `image/deploy-test/build.sh printed no image: ${JSON.stringify(out)}`);
  const manifest = join(dirname(out.image), 'manifest');
  if (existsSync(manifest)) io.err(`  ${readFileSync(manifest, 'utf8').split('\n').filter((l) => /^(image_bytes|raw_bytes)=/.test(l)).join(', ')}\n`);
  return { ephemeral, deploy: { name: 'debian-12-test', kernel: out.kernel, initrd: out.initrd, image: out.image } };
}
