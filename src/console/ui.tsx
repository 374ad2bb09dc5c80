// Small shared pieces: labelled form fields that show the API's refusal next to the field, a form hook that
// sends and sorts errors into fields, notices, a state badge, a bar chart (SVG, no library) and a dialog.
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from './api.tsx';

let ids = 0;
export function useId(prefix: string): string {
  const ref = useRef<string | undefined>(undefined);
  ref.current ??= `${prefix}-${++ids}`;
  return ref.current;
}

export interface FormState {
  busy: boolean;
  /** Refusals by field name (from "body.<field>: ..."), and one for the form as a whole. */
  errors: Record<string, string>;
  formError: string | undefined;
  done: string | undefined;
  /** Runs `fn`; an ApiError naming a known field goes next to it, anything else above the buttons. */
  submit(fn: () => Promise<string | void>, fields?: readonly string[], codeFields?: Record<string, string>): Promise<boolean>;
  reset(): void;
}

export function useForm(): FormState {
  const [busy, setBusy] = useState(false);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [formError, setFormError] = useState<string | undefined>();
  const [done, setDone] = useState<string | undefined>();
  return {
    busy, errors, formError, done,
    reset() { setErrors({}); setFormError(undefined); setDone(undefined); },
    async submit(fn, fields, codeFields = {}) {
      setBusy(true); setErrors({}); setFormError(undefined); setDone(undefined);
      try {
        const message = await fn();
        setDone(message || 'Done.');
        return true;
      } catch (err) {
        if (err instanceof ApiError) {
          const f = err.field;
          const byCode = codeFields[err.code];
          if (f && (!fields || fields.includes(f.name))) setErrors({ [f.name]: f.message });
          else if (byCode) setErrors({ [byCode]: err.message });
          else setFormError(`${err.message} (${err.code})`);
        } else setFormError(String(err));
        return false;
      } finally {
        setBusy(false);
      }
    },
  };
}

interface FieldProps {
  label: string;
  name: string;
  form?: FormState;
  hint?: string;
  children: (id: string, describedBy: string | undefined, invalid: boolean) => ComponentChildren;
}

/** A label, the control, a hint and the field's error (announced, and tied to the control by aria-describedby). */
export function Field({ label, name, form, hint, children }: FieldProps) {
  const id = useId(`f-${name}`);
  const error = form?.errors[name];
  const described = [hint ? `${id}-hint` : '', error ? `${id}-err` : ''].filter(Boolean).join(' ') || undefined;
  return (
    <div class={`field${error ? ' has-error' : ''}`}>
      <label for={id}>{label}</label>
      {children(id, described, error !== undefined)}
      {hint && <div class="hint" id={`${id}-hint`}>{hint}</div>}
      {error && <div class="field-error" id={`${id}-err`} role="alert" data-field={name}>{error}</div>}
    </div>
  );
}

interface InputProps {
  label: string; name: string; form?: FormState; hint?: string; value: string; onValue: (v: string) => void;
  type?: 'text' | 'password' | 'url'; placeholder?: string; autoComplete?: string; required?: boolean; autoFocus?: boolean; inputMode?: 'numeric' | 'text';
}
export function TextField({ label, name, form, hint, value, onValue, type, ...rest }: InputProps) {
  return (
    <Field label={label} name={name} form={form} hint={hint}>
      {(id, d, invalid) => <input {...rest} type={(type ?? 'text') as 'text'} id={id} name={name} value={value} aria-invalid={invalid} aria-describedby={d}
        onInput={(e) => onValue((e.currentTarget as HTMLInputElement).value)} />}
    </Field>
  );
}

export function SelectField(props: { label: string; name: string; form?: FormState; hint?: string; value: string; onValue: (v: string) => void; options: readonly (string | [string, string])[] }) {
  return (
    <Field label={props.label} name={props.name} form={props.form} hint={props.hint}>
      {(id, d, invalid) => (
        <select id={id} name={props.name} value={props.value} aria-invalid={invalid} aria-describedby={d} onChange={(e) => props.onValue((e.currentTarget as HTMLSelectElement).value)}>
          {props.options.map((o) => (Array.isArray(o) ? <option value={o[0]}>{o[1]}</option> : <option value={o}>{o}</option>))}
        </select>
      )}
    </Field>
  );
}

export function TextArea(props: { label: string; name: string; form?: FormState; hint?: string; value: string; onValue: (v: string) => void; rows?: number }) {
  return (
    <Field label={props.label} name={props.name} form={props.form} hint={props.hint}>
      {(id, d, invalid) => <textarea id={id} name={props.name} rows={props.rows ?? 3} value={props.value} aria-invalid={invalid} aria-describedby={d}
        onInput={(e) => props.onValue((e.currentTarget as HTMLTextAreaElement).value)} />}
    </Field>
  );
}

/** What the form says as a whole: its error, or what it did. */
export function FormStatus({ form }: { form: FormState }) {
  if (form.formError) return <div class="notice error" role="alert">{form.formError}</div>;
  if (form.done) return <div class="notice ok" role="status">{form.done}</div>;
  return null;
}

export function Notice({ kind, children }: { kind: 'error' | 'ok' | 'info'; children: ComponentChildren }) {
  return <div class={`notice ${kind}`} role={kind === 'error' ? 'alert' : 'status'}>{children}</div>;
}

export function StateBadge({ state }: { state: string }) {
  return <span class={`badge state-${state.toLowerCase()}`}>{state}</span>;
}

/** Loads on mount and whenever `deps` change; `reload` fetches again. */
export function useLoad<T>(fn: () => Promise<T>, deps: readonly unknown[] = []): { data: T | undefined; error: string | undefined; reload: () => void; loading: boolean } {
  const [data, setData] = useState<T | undefined>();
  const [error, setError] = useState<string | undefined>();
  const [loading, setLoading] = useState(true);
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    setLoading(true);
    fn().then((d) => { if (live) { setData(d); setError(undefined); } }, (err: unknown) => {
      if (live) setError(err instanceof ApiError ? `${err.message} (${err.code})` : String(err));
    }).finally(() => { if (live) setLoading(false); });
    return () => { live = false; };
  }, [...deps, n]);
  return { data, error, loading, reload: () => setN((x) => x + 1) };
}

/** Horizontal bars, one per row, with the value written out (the chart is never the only way to read it). */
export function BarChart({ title, rows, max, format = String }: { title: string; rows: { label: string; value: number; detail?: string; tone?: string }[]; max?: number; format?: (n: number) => string }) {
  const top = max ?? Math.max(1, ...rows.map((r) => r.value));
  const rowH = 26;
  const labelW = 150;
  const width = 560;
  const barW = width - labelW - 120;
  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <svg viewBox={`0 0 ${width} ${rows.length * rowH + 4}`} role="img" aria-label={`${title}: ${rows.map((r) => `${r.label} ${r.detail ?? format(r.value)}`).join(', ')}`}>
        {rows.map((r, i) => (
          <g transform={`translate(0 ${i * rowH + 2})`}>
            <text x={labelW - 8} y={17} text-anchor="end" class="chart-label">{r.label}</text>
            <rect x={labelW} y={4} width={barW} height={16} class="chart-track" />
            <rect x={labelW} y={4} width={Math.max(0, Math.min(1, r.value / top)) * barW} height={16} class={`chart-bar ${r.tone ?? ''}`} />
            <text x={labelW + barW + 8} y={17} class="chart-value">{r.detail ?? format(r.value)}</text>
          </g>
        ))}
      </svg>
    </figure>
  );
}

export function Progress({ value, total, label }: { value: number; total: number | null; label: string }) {
  const pct = total && total > 0 ? Math.min(100, Math.round((value / total) * 100)) : undefined;
  return (
    <div class="progress-row">
      <progress max={total ?? undefined} value={total ? value : undefined} aria-label={label} />
      <span>{pct !== undefined ? `${pct}%` : ''} {bytes(value)}{total ? ` of ${bytes(total)}` : ''}</span>
    </div>
  );
}

/** A modal dialog (<dialog>: focus is trapped and Escape closes it, by the browser). */
export function Dialog({ title, open, onClose, children }: { title: string; open: boolean; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDialogElement>(null);
  const id = useId('dlg');
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return (
    <dialog ref={ref} aria-labelledby={id} onClose={onClose} onCancel={onClose}>
      <div class="dialog-head">
        <h2 id={id}>{title}</h2>
        <button type="button" class="ghost" onClick={onClose} aria-label="Close">×</button>
      </div>
      {open && children}
    </dialog>
  );
}

export function bytes(n: number | undefined | null): string {
  if (n === undefined || n === null || !Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${v >= 100 || u === 0 ? Math.round(v) : v.toFixed(1)} ${units[u]}`;
}

export function when(iso: string | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty">{children}</p>;
}
