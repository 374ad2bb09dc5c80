// The live event stream (GET /api/v1/events/stream, Server-Sent Events): one EventSource per subscriber set.
// EventSource reconnects by itself and sends Last-Event-ID, so the server replays what was missed; `reset`
// means too much was missed: subscribers reload what they show.
import { useEffect, useRef } from 'preact/hooks';

export interface LiveEvent { id: string; at: string; type: string; actor: string; subject?: string; data?: Record<string, unknown> }
type Handler = (e: LiveEvent | 'reset') => void;

const TYPES = ['machine.created', 'machine.updated', 'machine.deleted', 'machine.state', 'machine.state.effect'];

/** Calls `handler` for each machine event (of one machine when `machine` is given) while mounted. */
export function useLiveEvents(handler: Handler, machine?: string): void {
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => {
    const source = new EventSource(`/api/v1/events/stream${machine ? `?machine=${encodeURIComponent(machine)}` : ''}`);
    const on = (ev: MessageEvent<string>) => {
      try { ref.current(JSON.parse(ev.data) as LiveEvent); } catch { /* a malformed message is skipped */ }
    };
    for (const t of TYPES) source.addEventListener(t, on as EventListener);
    // Any other machine.* type the server adds later still arrives as a typed event; listen generically too.
    source.addEventListener('message', on as EventListener);
    source.addEventListener('reset', () => ref.current('reset'));
    return () => source.close();
  }, [machine]);
}
