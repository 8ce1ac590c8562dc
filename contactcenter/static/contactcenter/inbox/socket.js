// The agent websocket: resync from the last event id, dedupe, reconnect with backoff.
//
// Protocol (see contactcenter/consumers.py): after opening, send {"op":"resync","last_event_id":N};
// the server answers {"type":"ready"} and then {"type":"events","events":[...],"last_event_id":M}
// frames in id order. On any close we reconnect and resync from the last id we applied, so nothing
// is missed and nothing is applied twice, except when the server says the session or its access ended
// (4401 signed out, 4403 forbidden, 4409 access changed): then reconnecting cannot help, and onAccessEnded
// decides what the page does instead.

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const PING_EVERY_MS = 20000;
const SILENCE_LIMIT_MS = 55000;
const CLOSE_SIGNED_OUT = 4401;
const CLOSE_FORBIDDEN = 4403;
const CLOSE_ACCESS_CHANGED = 4409;
const ACCESS_ENDED = new Set([CLOSE_SIGNED_OUT, CLOSE_FORBIDDEN, CLOSE_ACCESS_CHANGED]);

export class InboxSocket {
  /**
   * @param {object} options
   * @param {number} options.lastEventId   where to resume from (GET /api/v1/me/ last_event_id)
   * @param {(events: object[]) => void} options.onEvents
   * @param {(frame: object) => void} options.onTyping
   * @param {(frame: object) => void} options.onError
   * @param {(state: string) => void} options.onState   "connecting" | "live" | "reconnecting" | "offline"
   * @param {() => void} options.onReady                 after each (re)sync started: re-send watch, presence
   * @param {(code: number) => void} options.onAccessEnded the server closed for good (see ACCESS_ENDED)
   * @param {() => void} options.onAccessWidened       the user may now see more (re-read the lists)
   */
  constructor(options) {
    this.options = options;
    this.lastEventId = Number(options.lastEventId) || 0;
    this.seen = new Set();
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    this.lastHeard = Date.now();
    this.state = "";
    this.everLive = false;
    this.heartbeat = setInterval(() => this.#beat(), PING_EVERY_MS);
    window.addEventListener("online", () => this.#reconnectSoon(0));
  }

  get url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws/agent/`;
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.#setState(this.everLive ? "reconnecting" : "connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    // Exposed so tests (and curious humans) can cut the connection: window.inboxSocket.close().
    window.inboxSocket = ws;
    ws.addEventListener("open", () => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      this.#sendRaw({ op: "resync", last_event_id: this.lastEventId });
    });
    ws.addEventListener("message", (event) => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.#onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      if (ACCESS_ENDED.has(event.code)) {
        this.stopped = true;
        this.#setState("offline");
        this.options.onAccessEnded?.(event.code);
        return;
      }
      this.#reconnectSoon();
    });
  }

  /** Send a client op; returns false when the socket is not open (the caller re-sends on ready). */
  send(frame) {
    if (!this.isOpen) return false;
    return this.#sendRaw(frame);
  }

  #sendRaw(frame) {
    try {
      this.ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  #onFrame(frame) {
    switch (frame.type) {
      case "ready":
        this.attempt = 0;
        this.everLive = true;
        this.#setState("live");
        this.options.onReady?.();
        break;
      case "events": {
        const fresh = [];
        for (const event of frame.events || []) {
          if (typeof event.id !== "number" || event.id <= this.lastEventId || this.seen.has(event.id)) continue;
          this.seen.add(event.id);
          this.lastEventId = event.id;
          fresh.push(event);
        }
        if (typeof frame.last_event_id === "number" && frame.last_event_id > this.lastEventId) {
          this.lastEventId = frame.last_event_id;
        }
        if (this.seen.size > 5000) this.seen = new Set([...this.seen].slice(-1000));
        if (fresh.length) this.options.onEvents(fresh);
        break;
      }
      case "typing":
        this.options.onTyping?.(frame);
        break;
      case "access":
        // More to see (a new inbox for one of my teams): the lists are re-read, nothing else changes.
        this.options.onAccessWidened?.();
        break;
      case "error":
        this.options.onError?.(frame);
        break;
      default:
        break;
    }
  }

  #reconnectSoon(delay) {
    if (this.stopped) return;
    if (this.isOpen || (this.ws && this.ws.readyState === WebSocket.CONNECTING)) return;
    this.#setState("reconnecting");
    clearTimeout(this.timer);
    const base = delay ?? BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    const jitter = delay === 0 ? 0 : Math.random() * base * 0.3;
    this.timer = setTimeout(() => this.connect(), base + jitter);
  }

  #beat() {
    if (!this.isOpen) return;
    if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
      // Half-open connection: nothing heard for too long. Close it and let the reconnect resync.
      this.ws.close();
      return;
    }
    this.#sendRaw({ op: "ping" });
  }

  #setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.options.onState?.(state);
  }
}
