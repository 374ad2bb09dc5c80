// The console's one way to the REST API (/api/v1, same origin): the session cookie rides along by itself
// (HttpOnly, never visible here); every state-changing request carries the session's CSRF token, which the
// login answer and GET /api/v1/session hand out. Errors keep the API's stable shape
// {statusCode, code, error, message}; `fieldOf` finds which form field a refusal names ("body.disk: ...").
//
// (Every console source is .tsx: the root tsconfig type-checks src/**/*.ts for Node; the console's own
// tsconfig, with the DOM library, checks these.)

export interface SessionInfo { user: { id: string; username: string; role: 'viewer' | 'operator' | 'admin' }; csrfToken?: string }

let csrfToken: string | undefined;
let onUnauthenticated: () => void = () => {};

export function setCsrf(token: string | undefined): void { csrfToken = token; }
export function onSessionEnded(fn: () => void): void { onUnauthenticated = fn; }

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
  /** The form field a validation refusal names, and the problem without the field path. */
  get field(): { name: string; message: string } | undefined {
    return fieldOf(this.message);
  }
}

/** "body.sshKeys[0]: must match pattern" -> {name: 'sshKeys', message: 'must match pattern'}. */
export function fieldOf(message: string): { name: string; message: string } | undefined {
  const m = /^(?:body|querystring|params)\.([A-Za-z0-9_]+)[^:\s]*:\s*(.*)$/s.exec(message);
  return m ? { name: m[1]!, message: m[2]! } : undefined;
}

const SAFE = new Set(['GET', 'HEAD']);

export async function api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (!SAFE.has(method) && csrfToken) headers['x-csrf-token'] = csrfToken;
  let res: Response;
  try {
    res = await fetch(path, { method, headers, credentials: 'same-origin', ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  } catch (err) {
    throw new ApiError(0, 'NETWORK', `metalbox did not answer (${(err as Error).message})`);
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let data: unknown;
  try { data = text === '' ? undefined : JSON.parse(text); } catch { data = undefined; }
  if (!res.ok) {
    const e = (data ?? {}) as { code?: string; message?: string };
    const err = new ApiError(res.status, e.code ?? 'HTTP_ERROR', e.message ?? `${res.status} ${res.statusText}`);
    if (res.status === 401 && path !== '/api/v1/login') onUnauthenticated();
    throw err;
  }
  return data as T;
}

export const get = <T,>(path: string) => api<T>('GET', path);
export const post = <T,>(path: string, body?: unknown) => api<T>('POST', path, body ?? {});
export const put = <T,>(path: string, body?: unknown) => api<T>('PUT', path, body ?? {});
export const patch = <T,>(path: string, body?: unknown) => api<T>('PATCH', path, body ?? {});
export const del = <T,>(path: string) => api<T>('DELETE', path);

export function qs(params: Record<string, string | number | readonly string[] | undefined>): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === '') continue;
    if (Array.isArray(v)) { if (v.length > 0) u.set(k, v.join(',')); } else u.set(k, String(v));
  }
  const s = u.toString();
  return s ? `?${s}` : '';
}

/**
 * Sends one file as the body of a POST (application/octet-stream) and reports the bytes sent. XMLHttpRequest,
 * not fetch: only it has upload progress events. Refusals become the same ApiError as `api`'s.
 */
export function upload<T>(path: string, file: Blob, onProgress: (sent: number, total: number) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('content-type', 'application/octet-stream');
    xhr.setRequestHeader('accept', 'application/json');
    if (csrfToken) xhr.setRequestHeader('x-csrf-token', csrfToken);
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onerror = () => reject(new ApiError(0, 'NETWORK', 'metalbox did not answer (the upload was interrupted)'));
    xhr.onabort = () => reject(new ApiError(0, 'NETWORK', 'the upload was cancelled'));
    xhr.onload = () => {
      let data: unknown;
      try { data = xhr.responseText === '' ? undefined : JSON.parse(xhr.responseText); } catch { data = undefined; }
      if (xhr.status >= 200 && xhr.status < 300) { onProgress(file.size, file.size); resolve(data as T); return; }
      const e = (data ?? {}) as { code?: string; message?: string };
      if (xhr.status === 401) onUnauthenticated();
      reject(new ApiError(xhr.status, e.code ?? 'HTTP_ERROR', e.message ?? `${xhr.status} ${xhr.statusText}`));
    };
    xhr.send(file);
  });
}
