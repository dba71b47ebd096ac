/**
 * What the collector tells the dashboards ({@link FleetEvents}: `emit("cycle", {...})` after each
 * cycle), and each event as the API's Server-Sent Events stream (./api.ts) sends it.
 * @module
 */

/** One message of {@link FleetEvents}. */
export interface FleetEvent {
  /** The SSE event name, e.g. `cycle`. */
  event: string;
  /** JSON-able data. */
  data: unknown;
}

/** Receives every emitted {@link FleetEvent}. */
export type FleetEventListener = (message: FleetEvent) => void;

/** SSE event names: what a client's `addEventListener(name)` can be given, never a line break. */
const EVENT_NAME = /^[A-Za-z][\w.-]{0,63}$/;

/** What the collector tells the dashboards: `emit("cycle", {...})` after each cycle. */
export class FleetEvents {
  readonly #listeners = new Set<FleetEventListener>();

  /** Adds a listener; returns what removes it. */
  subscribe(listener: FleetEventListener): () => void {
    this.#listeners.add(listener);
    return () => this.unsubscribe(listener);
  }

  /** Removes a listener. */
  unsubscribe(listener: FleetEventListener): void {
    this.#listeners.delete(listener);
  }

  /** Sends `data` as event `event` to every listener. A listener that throws does not stop the others. */
  emit(event: string, data: unknown): void {
    if (!EVENT_NAME.test(event)) throw new TypeError(`invalid event name ${JSON.stringify(event)}`);
    const message: FleetEvent = { event, data };
    for (const listener of [...this.#listeners]) {
      try {
        listener(message);
      } catch {
        // A listener's failure is its own (an SSE stream drops itself).
      }
    }
  }

  /** How many listeners there are (open event streams). */
  get size(): number {
    return this.#listeners.size;
  }
}

const encoder = new TextEncoder();
/** Each event encoded once, whatever the number of streams. */
const encodedEvents = new WeakMap<FleetEvent, Uint8Array>();

export function encodeEvent(message: FleetEvent): Uint8Array {
  let bytes = encodedEvents.get(message);
  if (!bytes) {
    // JSON.stringify escapes line breaks, so the data is one line.
    bytes = encoder.encode(`event: ${message.event}\ndata: ${JSON.stringify(message.data) ?? "null"}\n\n`);
    encodedEvents.set(message, bytes);
  }
  return bytes;
}
