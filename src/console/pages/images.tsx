// Boot images: the registered ones with their files, and adding one from URLs (a download job on the
// server; its progress is polled and shown as a bar per file) or from files on this computer (each uploaded
// with a progress bar to POST /api/v1/uploads, then registered by upload id like a URL).
import { useEffect, useState } from 'preact/hooks';
import { ApiError, del, get, post, upload } from '../api.tsx';
import { Empty, Field, FormStatus, Notice, Progress, TextField, bytes, useForm, useLoad, when } from '../ui.tsx';

interface ImageFile { sha256: string; size: number; source: string }
interface Image { name: string; files: { kernel: ImageFile; initrd: ImageFile; rootfs?: ImageFile }; cmdline: string; size: number; createdAt: string }
interface Job { id: string; subject: string; state: string; progress: { bytes: number; total: number | null; parts: Record<string, { bytes: number; total: number | null; done: boolean }> }; error?: { code: string; message: string } }

export function ImagesPage({ role }: { role: string }) {
  const images = useLoad(() => get<{ images: Image[]; ephemeralImage: string | null; ipxe: { name: string; size: number }[] }>('/api/v1/images'));
  const [job, setJob] = useState<Job | undefined>();
  useEffect(() => {
    if (!job || job.state !== 'running') return;
    const t = window.setTimeout(() => {
      get<Job>(`/api/v1/jobs/${job.id}`).then((j) => { setJob(j); if (j.state !== 'running') images.reload(); }, () => {});
    }, 500);
    return () => window.clearTimeout(t);
  }, [job]);
  const admin = role === 'admin';
  return (
    <section aria-labelledby="img-title">
      <h1 id="img-title">Images</h1>
      {images.error && <Notice kind="error">{images.error}</Notice>}
      {admin && <AddImage onStarted={setJob} />}
      {admin && <AddImageFromFiles onStarted={setJob} />}
      {job && (
        <div class="card" data-testid="image-job" aria-live="polite">
          <h2>Adding {job.subject}: {job.state}</h2>
          {Object.entries(job.progress.parts).map(([part, p]) => <Progress label={`${job.subject} ${part}`} value={p.bytes} total={p.total} />)}
          {job.error && <Notice kind="error">{job.error.message} ({job.error.code})</Notice>}
          {job.state === 'running' && <button type="button" onClick={() => void del(`/api/v1/jobs/${job.id}`)}>Cancel</button>}
        </div>
      )}
      <div class="card">
        <h2>Registered images</h2>
        <p class="muted">Ephemeral image (enlist, commission, rescue): {images.data?.ephemeralImage ?? 'none set'}.
          iPXE binaries: {images.data ? images.data.ipxe.map((b) => `${b.name} (${bytes(b.size)})`).join(', ') || 'none found' : '…'}.</p>
        {images.data?.images.length === 0 && <Empty>No boot images yet.</Empty>}
        {images.data && images.data.images.length > 0 && (
          <table class="table">
            <thead><tr><th scope="col">Name</th><th scope="col">Files</th><th scope="col">Size</th><th scope="col">Added</th>{admin && <th scope="col"><span class="sr-only">Actions</span></th>}</tr></thead>
            <tbody>{images.data.images.map((i) => (
              <tr><td><strong>{i.name}</strong>{i.cmdline && <div class="muted"><code>{i.cmdline}</code></div>}</td>
                <td>{Object.entries(i.files).map(([r, f]) => <div><span class="tag">{r}</span> <code title={f.sha256}>{f.sha256.slice(0, 12)}…</code> {bytes(f.size)} <span class="muted">{f.source}</span></div>)}</td>
                <td>{bytes(i.size)}</td><td>{when(i.createdAt)}</td>
                {admin && <td><button type="button" class="ghost" aria-label={`Remove image ${i.name}`} onClick={() => { if (window.confirm(`Remove image ${i.name}?`)) void del(`/api/v1/images/${i.name}`).then(images.reload, (e: unknown) => window.alert((e as ApiError).message)); }}>Remove</button></td>}</tr>
            ))}</tbody>
          </table>
        )}
      </div>
    </section>
  );
}

function AddImage({ onStarted }: { onStarted: (j: Job) => void }) {
  const form = useForm();
  const [name, setName] = useState('');
  const [kernel, setKernel] = useState('');
  const [initrd, setInitrd] = useState('');
  const [rootfs, setRootfs] = useState('');
  const [cmdline, setCmdline] = useState('');
  return (
    <form class="card inline-form" aria-labelledby="img-add" onSubmit={(e) => {
      e.preventDefault();
      void form.submit(async () => {
        const src = (u: string) => { const [url, sum] = u.trim().split('#sha256='); return { url: url!, ...(sum ? { sha256: sum } : {}) }; };
        const r = await post<{ job: Job }>('/api/v1/images', {
          name: name.trim(), kernel: src(kernel), initrd: src(initrd), ...(rootfs.trim() ? { rootfs: src(rootfs) } : {}), ...(cmdline.trim() ? { cmdline: cmdline.trim() } : {}),
        });
        onStarted(r.job);
        return 'Download started.';
      }, ['name', 'kernel', 'initrd', 'rootfs', 'cmdline'], { IMAGE_EXISTS: 'name', IMAGE_INVALID: 'name' });
    }}>
      <h2 id="img-add">Add an image from URLs</h2>
      <TextField label="Name" name="name" form={form} value={name} onValue={setName} hint="1-63 of a-z 0-9 . _ -" required />
      <TextField label="Kernel URL" name="kernel" form={form} value={kernel} onValue={setKernel} type="url" hint="http(s); may end in #sha256=HEX" required />
      <TextField label="Initrd URL" name="initrd" form={form} value={initrd} onValue={setInitrd} type="url" required />
      <TextField label="Disk image (rootfs) URL" name="rootfs" form={form} value={rootfs} onValue={setRootfs} type="url" hint="for deployable images" />
      <TextField label="Kernel command line" name="cmdline" form={form} value={cmdline} onValue={setCmdline} />
      <button type="submit" class="primary" disabled={form.busy}>Add image</button>
      <FormStatus form={form} />
    </form>
  );
}

const PARTS = [['kernel', 'Kernel file'], ['initrd', 'Initrd file'], ['rootfs', 'Disk image (rootfs) file']] as const;
type Part = (typeof PARTS)[number][0];

function AddImageFromFiles({ onStarted }: { onStarted: (j: Job) => void }) {
  const form = useForm();
  const [name, setName] = useState('');
  const [cmdline, setCmdline] = useState('');
  const [files, setFiles] = useState<Partial<Record<Part, File>>>({});
  const [sent, setSent] = useState<Partial<Record<Part, { bytes: number; total: number }>>>({});
  return (
    <form class="card inline-form" aria-labelledby="img-upload" onSubmit={(e) => {
      e.preventDefault();
      setSent({});
      void form.submit(async () => {
        const ids: Partial<Record<Part, { upload: string }>> = {};
        for (const [part] of PARTS) {
          const file = files[part];
          if (!file) continue;
          try {
            const u = await upload<{ id: string }>(`/api/v1/uploads?filename=${encodeURIComponent(file.name.replace(/[^\x20-\x7e]/g, '_').slice(0, 255))}`, file,
              (b, total) => setSent((s) => ({ ...s, [part]: { bytes: b, total } })));
            ids[part] = { upload: u.id };
          } catch (err) {
            // An upload's refusal (too large, ...) names no body field: put it at the file's field.
            if (err instanceof ApiError && !err.field) throw new ApiError(err.status, err.code, `body.${part}: ${err.message} (${err.code})`);
            throw err;
          }
        }
        const r = await post<{ job: Job }>('/api/v1/images', { name: name.trim(), ...ids, ...(cmdline.trim() ? { cmdline: cmdline.trim() } : {}) });
        onStarted(r.job);
        return 'Uploaded; the image is being added.';
      }, ['name', 'kernel', 'initrd', 'rootfs', 'cmdline'], { IMAGE_EXISTS: 'name', IMAGE_INVALID: 'name' });
    }}>
      <h2 id="img-upload">Add an image from files</h2>
      <TextField label="Image name" name="name" form={form} value={name} onValue={setName} hint="1-63 of a-z 0-9 . _ -" required />
      {PARTS.map(([part, label]) => (
        <Field label={label} name={part} form={form} hint={part === 'rootfs' ? 'for deployable images' : undefined}>
          {(id, d, invalid) => (
            <div>
              <input type="file" id={id} name={part} aria-invalid={invalid} aria-describedby={d} required={part !== 'rootfs'}
                onChange={(e) => { const f = (e.currentTarget as HTMLInputElement).files?.[0]; setFiles((s) => { const n = { ...s }; if (f) n[part] = f; else delete n[part]; return n; }); }} />
              {sent[part] && <Progress label={`Uploading ${label.toLowerCase()}`} value={sent[part].bytes} total={sent[part].total} />}
            </div>
          )}
        </Field>
      ))}
      <TextField label="Command line" name="cmdline" form={form} value={cmdline} onValue={setCmdline} hint="extra kernel arguments" />
      <button type="submit" class="primary" disabled={form.busy}>Upload and add</button>
      <FormStatus form={form} />
    </form>
  );
}
