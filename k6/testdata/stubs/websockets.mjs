// Stub of k6/websockets on node's WebSocket (undici), with k6's event shapes: open and
// message events carry a timestamp (milliseconds), error events an error string, close
// events the code; params.headers go with the upgrade request. Like k6, close() while still connecting is refused here: in k6 it
// blocks the event loop.

function now() {
  return performance.timeOrigin + performance.now();
}

export class WebSocket {
  constructor(url, protocols, params) {
    if (!/^wss?:\/\//.test(url)) {
      throw new Error(`WebSocket requires url with scheme ws or wss, but got ${url}`);
    }
    if (params !== undefined && params !== null && typeof params !== 'object') {
      throw new Error('k6emu: params must be an object');
    }
    this.url = url;
    this.readyState = 0;
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this.onclose = null;
    this.listeners = { open: [], message: [], error: [], close: [] };
    // node's WebSocket (undici) takes headers in its init object, as k6 takes params.headers.
    const headers = params && params.headers;
    const ws = headers ? new globalThis.WebSocket(url, { headers }) : new globalThis.WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.readyState = 1;
      this.emit('open', { type: 'open', timestamp: now() });
    };
    ws.onmessage = (ev) => {
      if (this.readyState === 1) {
        this.emit('message', { type: 'message', data: String(ev.data), timestamp: now() });
      }
    };
    ws.onerror = (ev) => {
      this.emit('error', { type: 'error', error: String((ev && (ev.message || ev.error)) || 'websocket error') });
      if (this.readyState === 0) {
        // k6 follows a failed handshake with a close event; node's WebSocket does not.
        this.closed({ code: 1006, reason: '' });
      }
    };
    ws.onclose = (ev) => this.closed(ev);
  }

  closed(ev) {
    if (this.readyState === 3) {
      return;
    }
    this.readyState = 3;
    this.emit('close', { type: 'close', code: ev.code, reason: ev.reason, timestamp: now() });
  }

  emit(type, event) {
    const on = this['on' + type];
    if (typeof on === 'function') {
      on(event);
    }
    for (const fn of this.listeners[type]) {
      fn(event);
    }
  }

  addEventListener(type, fn) {
    this.listeners[type].push(fn);
  }

  send(data) {
    if (this.readyState !== 1) {
      throw new Error('InvalidStateError');
    }
    this.ws.send(data);
  }

  close(code) {
    if (this.readyState === 0) {
      throw new Error('k6emu: close() on a connecting WebSocket blocks k6 (its write pump is not running yet)');
    }
    if (this.readyState >= 2) {
      return;
    }
    this.readyState = 2;
    this.ws.close(code || 1000);
  }
}
