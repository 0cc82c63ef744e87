// A shell in a box: xterm.js over the exec WebSocket (docs/rest.md, "Exec WebSocket") with a TTY.
// Output credit is returned as soon as xterm has taken the bytes; keystrokes respect the stdin
// credit the server grants (a paste larger than it waits for credit instead of being dropped).

const WINDOW = 256 * 1024;
const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;

export class TerminalSession {
  constructor(container, boxId, command, onStatus) {
    this.onStatus = onStatus;
    this.term = new window.Terminal({ cursorBlink: true, convertEol: false, scrollback: 5000, fontSize: 13 });
    this.fit = new window.FitAddon.FitAddon();
    this.term.loadAddon(this.fit);
    container.replaceChildren();
    this.term.open(container);
    this.fit.fit();
    this.stdinCredit = 0;
    this.pending = [];
    this.encoder = new TextEncoder();
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${scheme}//${window.location.host}/v1/boxes/${encodeURIComponent(boxId)}/exec`;
    this.ws = new WebSocket(url);
    this.ws.binaryType = 'arraybuffer';
    this.ws.onopen = () => {
      this.ws.send(JSON.stringify({
        type: 'start', command, args: [], tty: true, env: { TERM: 'xterm-256color' },
        rows: this.term.rows, cols: this.term.cols, window: WINDOW,
      }));
      this.onStatus('starting');
    };
    this.ws.onmessage = (event) => this.message(event.data);
    this.ws.onclose = () => this.onStatus(this.exitText || 'closed');
    this.ws.onerror = () => this.onStatus('connection failed');
    this.term.onData((data) => this.input(this.encoder.encode(data)));
    this.term.onBinary((data) => this.input(Uint8Array.from(data, (c) => c.charCodeAt(0) & 255)));
    this.term.onResize(({ rows, cols }) => this.control({ type: 'resize', rows, cols }));
    this.resizeObserver = new ResizeObserver(() => this.fit.fit());
    this.resizeObserver.observe(container);
    this.term.focus();
  }

  message(data) {
    if (data instanceof ArrayBuffer) {
      const bytes = new Uint8Array(data);
      const kind = bytes[0];
      const payload = bytes.subarray(1);
      if (kind === STDOUT || kind === STDERR) {
        this.term.write(payload, () => this.control({ type: 'credit', stream: kind === STDOUT ? 'stdout' : 'stderr', bytes: payload.length }));
      }
      return;
    }
    let msg;
    try { msg = JSON.parse(data); } catch (e) { return; }
    if (msg.type === 'started') {
      this.stdinCredit = Number(msg.stdin_window) || 0;
      this.onStatus('connected');
      this.flush();
    } else if (msg.type === 'credit' && msg.stream === 'stdin') {
      this.stdinCredit += Number(msg.bytes) || 0;
      this.flush();
    } else if (msg.type === 'error') {
      const err = msg.error || {};
      this.exitText = `error: ${err.type || ''} ${err.message || ''}`;
      this.term.write(`\r\n[${this.exitText}]\r\n`);
    } else if (msg.type === 'exit') {
      this.exitText = `exited (${msg.exit_code})`;
      this.term.write(`\r\n[${this.exitText}]\r\n`);
    }
  }

  input(bytes) {
    this.pending.push(bytes);
    this.flush();
  }

  flush() {
    while (this.pending.length && this.stdinCredit > 0 && this.ws.readyState === WebSocket.OPEN) {
      let chunk = this.pending[0];
      if (chunk.length > this.stdinCredit) {
        this.pending[0] = chunk.subarray(this.stdinCredit);
        chunk = chunk.subarray(0, this.stdinCredit);
      } else {
        this.pending.shift();
      }
      const frame = new Uint8Array(chunk.length + 1);
      frame[0] = STDIN;
      frame.set(chunk, 1);
      this.stdinCredit -= chunk.length;
      this.ws.send(frame);
    }
  }

  control(msg) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  close() {
    this.resizeObserver.disconnect();
    if (this.ws.readyState <= WebSocket.OPEN) this.ws.close();
    this.term.dispose();
  }
}
