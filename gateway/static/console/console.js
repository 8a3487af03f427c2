// Upload console: signs in with an API client's id and secret, sends CSV files in chunks cut at
// record boundaries, follows the engine while it loads them, and lists the client's uploads.
// Plain ES module, no library: the page is served with a strict Content-Security-Policy and must
// work without internet, so everything it needs is here, in index.html and in console.css.

const MAX_CHUNK = 8 * 1024 * 1024;
const MAX_WORKBOOK = 64 * 1024 * 1024; // the gateway's INGEST_MAX_CHUNK_BYTES default
// `?chunk_bytes=N` lowers the chunk size (tests use it to get several chunks from a small file).
const CHUNK_BYTES = Math.min(MAX_CHUNK, Math.max(1024,
  Number(new URLSearchParams(location.search).get('chunk_bytes')) || MAX_CHUNK));
const PARALLEL = 4;          // chunks in flight per file
const ATTEMPTS = 5;          // tries per chunk for 429, 503 and network errors
const POLL_MS = 1000;
const REJECTED_SHOWN = 100;
const TERMINAL = new Set(['done', 'failed', 'aborted', 'undone']);

const $ = (selector, root = document) => root.querySelector(selector);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const number = new Intl.NumberFormat('en-US');
const fmt = (n) => (n == null ? '–' : number.format(n));

function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let i = -1;
  do { n /= 1024; i += 1; } while (n >= 1024 && i < units.length - 1);
  return `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

// PostgreSQL writes `2026-12-06 18:40:01.123456+00`; Date wants ISO with a full offset.
function parseTime(text) {
  if (!text) return null;
  const iso = text.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00');
  const time = new Date(iso);
  return Number.isNaN(time.getTime()) ? null : time;
}

function show(element, visible) { element.hidden = !visible; }

// ---------------------------------------------------------------------------------------------
// Authentication. The token lives in sessionStorage (it survives a reload, not the tab); the
// secret only in this module's memory, so an expired token is renewed silently while the page
// is open and asked for again after a reload.

const auth = JSON.parse(sessionStorage.getItem('console-auth') || 'null') || {};
let secret = null;
let signedIn = null; // resolves the waiters of `currentToken()` once someone signs in
let signedInResolve = null;
let renewing = null; // the token request in flight, if one is

async function signIn(clientId, clientSecret) {
  // btoa takes Latin-1 only: encode as UTF-8 first so any id or secret works.
  const basic = btoa(String.fromCharCode(...new TextEncoder().encode(`${clientId}:${clientSecret}`)));
  // credentials 'omit': a 401 then never pops up the browser's own Basic-auth dialog.
  const res = await fetch('/api/auth/token', {
    method: 'POST', credentials: 'omit', headers: { Authorization: `Basic ${basic}` },
  });
  const data = await readJson(res);
  if (!res.ok) throw new Error(errorText(res, data));
  Object.assign(auth, { token: data.token, clientId, expiresAt: Date.now() + data.expires_in * 1000 });
  sessionStorage.setItem('console-auth', JSON.stringify(auth));
  secret = clientSecret;
  showSignedIn();
  signedInResolve?.();
  signedIn = null;
}

function signOut(message) {
  delete auth.token;
  sessionStorage.removeItem('console-auth');
  secret = null;
  showSignedOut(message);
}

// The token to send: renewed a minute before it expires (with the remembered secret), or,
// without a secret, after the user signs in again; uploads in progress simply wait for that.
async function currentToken() {
  if (auth.token && Date.now() < auth.expiresAt - 60_000) return auth.token;
  if (secret) {
    // One renewal for all the requests that need it at once (each costs the server an argon2).
    renewing ??= signIn(auth.clientId, secret).finally(() => { renewing = null; });
    try { await renewing; return auth.token; } catch { /* ask the user */ }
  }
  if (auth.token && Date.now() < auth.expiresAt) return auth.token;
  if (!signedIn) {
    signedIn = new Promise((resolve) => { signedInResolve = resolve; });
    showSignedOut('Your session has ended: sign in again (uploads in progress wait, then go on).');
  }
  await signedIn;
  return auth.token;
}

// Called on a 401: the token is no good any more, whatever its expiry said.
function tokenRejected(token) {
  if (auth.token === token) { auth.expiresAt = 0; }
}

// ---------------------------------------------------------------------------------------------
// API calls (fetch; chunks use XMLHttpRequest for upload progress, see `putChunk`).

async function readJson(res) {
  try { return await res.json(); } catch { return null; }
}

function errorText(res, data) {
  const message = data?.error?.message;
  return message ? `${message} (HTTP ${res.status})` : `HTTP ${res.status} ${res.statusText}`;
}

// One request with the bearer token; a 401 renews the token and tries once more.
async function api(method, path, json) {
  for (let attempt = 0; ; attempt += 1) {
    const token = await currentToken();
    const headers = { Authorization: `Bearer ${token}` };
    if (json !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, {
      method, headers, credentials: 'omit', body: json === undefined ? undefined : JSON.stringify(json),
    });
    if (res.status !== 401 || attempt > 0) return res;
    tokenRejected(token);
  }
}

// The JSON answer of a request that must succeed; throws with the server's message otherwise.
async function apiJson(method, path, json) {
  const res = await api(method, path, json);
  const data = await readJson(res);
  if (!res.ok) throw Object.assign(new Error(errorText(res, data)), { status: res.status });
  return data;
}

// ---------------------------------------------------------------------------------------------
// Cutting a file into chunks. A cut goes right after a `\n` outside double quotes, so no record
// (not even one with a quoted line break) is split between chunks. Toggling on every `"` is
// enough: an escaped quote `""` toggles twice. Scanning bytes is safe in UTF-8, where no
// multi-byte character contains 0x22 or 0x0A. Returns the end offset of each chunk.

async function chunkEnds(file, maxBytes) {
  const ends = [];
  let start = 0;       // where the current chunk begins
  let lastCut = 0;     // the latest record boundary seen
  let inQuotes = false;
  const READ = 16 * 1024 * 1024;
  for (let offset = 0; offset < file.size; offset += READ) {
    const view = new Uint8Array(await file.slice(offset, offset + READ).arrayBuffer());
    for (let i = 0; i < view.length; i += 1) {
      const byte = view[i];
      if (byte === 0x22) {
        inQuotes = !inQuotes;
      } else if (byte === 0x0a && !inQuotes) {
        const cut = offset + i + 1;
        // This record does not fit: end the chunk at the previous boundary. (A single record
        // larger than the chunk size makes one oversized chunk; the server judges it.)
        if (cut - start > maxBytes && lastCut > start) { ends.push(lastCut); start = lastCut; }
        lastCut = cut;
      }
    }
  }
  if (file.size - start > maxBytes && lastCut > start) { ends.push(lastCut); start = lastCut; }
  if (file.size > start) ends.push(file.size);
  return ends;
}

async function sha256Hex(buffer) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', buffer));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

// PUT one chunk; resolves with the status (0 for a network error), never rejects.
function putChunk(folder, n, body, sha, token, onProgress, contentType = 'text/csv') {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', `/api/upload/${folder}/chunks/${n}`);
    xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.setRequestHeader('Content-Type', contentType);
    xhr.setRequestHeader('X-Checksum-SHA256', sha);
    xhr.upload.onprogress = (event) => onProgress(event.loaded);
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      resolve({ status: xhr.status, data, retryAfter: Number(xhr.getResponseHeader('Retry-After')) });
    };
    xhr.onerror = () => resolve({ status: 0 });
    xhr.send(body);
  });
}

// ---------------------------------------------------------------------------------------------
// Pause and resume: workers wait here before starting a chunk; chunks in flight finish.

let paused = false;
let resumed = null;
let resume = () => {};

function setPaused(value) {
  paused = value;
  if (paused) resumed = new Promise((resolve) => { resume = resolve; });
  else resume();
  $('#pause').disabled = paused;
  $('#resume').disabled = !paused;
  show($('#pause-note'), paused);
}

async function whilePaused() {
  while (paused) await resumed;
}

// ---------------------------------------------------------------------------------------------
// Uploads of this page: one object and one card per file.

const uploads = [];
let queue = Promise.resolve(); // files are sent one after another

class FileUpload {
  constructor(file) {
    this.file = file;
    this.card = $('#file-card-template').content.firstElementChild.cloneNode(true);
    this.folder = null;
    this.ends = [];           // chunk end offsets
    this.sent = new Set();    // chunks the gateway confirmed
    this.inFlight = new Map(); // chunk -> bytes on the wire
    this.failed = new Map();  // chunk -> why it could not be sent
    this.status = null;       // the last status answer
    this.samples = [];        // [time, rows_loaded] for rows/s
    this.polling = false;
    this.rejectedShown = false;
    $('.file-name', this.card).textContent = file.name;
    $('.retry-engine', this.card).addEventListener('click', () => this.retryEngine());
    $('.download-rejected', this.card).addEventListener('click', () =>
      downloadRejected(this.folder).catch((err) => this.say(err.message, true)));
    $('#file-cards').append(this.card);
    this.setState('queued');
    this.render();
  }

  get confirmedBytes() {
    let total = 0;
    for (const n of this.sent) total += this.end(n) - this.start(n);
    for (const loaded of this.inFlight.values()) total += loaded;
    return total;
  }

  start(n) { return n === 0 ? 0 : this.ends[n - 1]; }

  end(n) { return this.ends[n]; }

  setState(state) {
    this.card.dataset.state = state;
    $('.state-label', this.card).textContent = state;
  }

  say(text, isError = false) {
    const message = $('.message', this.card);
    message.textContent = text;
    message.classList.toggle('error', isError);
  }

  refuse(reason) {
    this.refused = true;
    this.setState('refused');
    this.say(reason, true);
    this.render();
  }

  // Cuts the file, creates the upload with its chunk count, sends the chunks, follows the load.
  async run() {
    try {
      this.setState('scanning');
      if (isWorkbook(this.file)) {
        // A workbook cannot be cut in the page: it goes whole, and the gateway converts its
        // first sheet to CSV.
        if (this.file.size > MAX_WORKBOOK) { this.refuse('An XLSX workbook must be at most 64 MiB.'); return; }
        this.contentType = XLSX;
        this.ends = this.file.size > 0 ? [this.file.size] : [];
      } else {
        this.say('Finding record boundaries…');
        this.ends = await chunkEnds(this.file, CHUNK_BYTES);
      }
      if (this.ends.length === 0) { this.refuse('The file is empty.'); return; }
      this.setState('creating');
      const created = await apiJson('POST', '/api/upload', {
        dataset: this.dataset, on_error: this.onError,
        expected_chunks: this.ends.length, total_bytes: this.file.size,
      });
      this.folder = created.folder;
      this.card.dataset.folder = created.folder;
      this.setState(created.state);
      this.say(`Sending ${this.ends.length} chunk(s)…`);
      this.render();
      refreshUploads();
      this.poll();
      await this.send([...this.ends.keys()]);
      if (this.failed.size) this.say('Some chunks could not be sent: retry them below.', true);
      else if (!this.closed) this.say('All chunks sent; the engine is loading them.');
    } catch (err) {
      this.setState(this.folder ? this.card.dataset.state : 'error');
      this.say(err.message, true);
    }
  }

  get closed() { return TERMINAL.has(this.status?.state); }

  // Sends the given chunks, PARALLEL at a time; the first chunk (the file's header) alone first,
  // since it says how all the chunks are read (others arriving before it wait for it).
  async send(chunks) {
    const todo = [...chunks];
    if (todo[0] === 0) {
      await whilePaused();
      if (this.closed) return;
      await this.sendChunk(todo.shift());
    }
    const worker = async () => {
      for (;;) {
        await whilePaused();
        const n = todo.shift();
        if (n === undefined || this.closed) return;
        await this.sendChunk(n);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, todo.length) }, worker));
  }

  // One chunk, retried on 429 (after Retry-After), 503, other gateway errors and network errors.
  async sendChunk(n) {
    this.failed.delete(n);
    const body = await this.file.slice(this.start(n), this.end(n)).arrayBuffer();
    const sha = await sha256Hex(body);
    for (let attempt = 1; ; attempt += 1) {
      const token = await currentToken();
      this.inFlight.set(n, 0);
      const answer = await putChunk(this.folder, n, body, sha, token, (loaded) => {
        this.inFlight.set(n, loaded);
        this.render();
      }, this.contentType);
      this.inFlight.delete(n);
      if (answer.status === 200) {
        this.sent.add(n);
        this.render();
        return;
      }
      if (answer.status === 401 && attempt <= 2) { tokenRejected(token); continue; }
      const transient = [0, 408, 429, 502, 503, 504].includes(answer.status);
      if (transient && attempt < ATTEMPTS && !this.closed) {
        const wait = answer.status === 429 && answer.retryAfter > 0
          ? answer.retryAfter * 1000 : 500 * 2 ** attempt;
        await sleep(wait);
        continue;
      }
      const why = answer.data?.error?.message
        || (answer.status ? `HTTP ${answer.status}` : 'network error');
      this.failed.set(n, `${why}${answer.status ? ` (HTTP ${answer.status})` : ''}`);
      this.render();
      return;
    }
  }

  async retrySend(n) {
    this.say(`Sending chunk ${n} again…`);
    await this.send([n]);
    this.say(this.failed.size ? 'Some chunks could not be sent.' : 'All chunks sent.', this.failed.size > 0);
    this.poll();
  }

  // Asks the engine to load its failed chunks again (every received chunk is tried: the
  // server answers 409 for those that did not fail, which we ignore).
  async retryEngine() {
    try {
      const queued = await retryFailedChunks(this.folder);
      this.say(`${queued} chunk(s) queued to load again…`);
      this.rejectedShown = false;
      await this.poll();
      if (this.status?.chunks_failed) {
        const why = this.status.error ?? 'see the rejected rows';
        this.say(`Retried ${queued} chunk(s); the engine refused again: ${why}`, true);
      }
    } catch (err) {
      this.say(err.message, true);
    }
  }

  // Polls the status every second until the upload ends; then shows its rejected rows.
  async poll() {
    if (this.polling || !this.folder) return;
    this.polling = true;
    try {
      for (;;) {
        try {
          this.applyStatus(await apiJson('GET', `/api/upload/${this.folder}`));
          if (this.closed) break;
        } catch (err) {
          this.say(err.message, true);
          if (err.status === 404) break;
        }
        await sleep(POLL_MS);
      }
    } finally {
      this.polling = false;
    }
    if (this.status) {
      await this.showRejected().catch((err) => this.say(err.message, true));
      const s = this.status;
      if (s.state === 'done') this.say(`Done: ${fmt(s.rows_loaded)} rows loaded, ${fmt(s.rows_rejected)} rejected.`);
      else if (s.error) this.say(s.error, true);
      refreshUploads();
    }
  }

  applyStatus(status) {
    this.status = status;
    const now = Date.now();
    this.samples.push([now, status.rows_loaded]);
    this.samples = this.samples.filter(([t]) => now - t <= 5000);
    this.setState(status.state);
    this.render();
  }

  rowsPerSecond() {
    const s = this.status;
    if (!s) return null;
    if (this.closed) {
      // Over the whole upload, from its creation to its end.
      const from = parseTime(s.created_at);
      const to = parseTime(s.completed_at);
      return from && to && to > from ? s.rows_loaded / ((to - from) / 1000) : null;
    }
    const [first, last] = [this.samples[0], this.samples[this.samples.length - 1]];
    return last[0] > first[0] ? (last[1] - first[1]) / ((last[0] - first[0]) / 1000) : null;
  }

  render() {
    const { card, status: s, file } = this;
    const progress = $('.file-progress', card);
    progress.value = this.refused ? 0 : (file.size ? this.confirmedBytes / file.size : 1);
    $('.file-meta', card).textContent = [bytes(file.size),
      this.ends.length ? `${this.ends.length} chunk(s)` : null,
      this.folder ? `upload ${this.folder}` : null].filter(Boolean).join(' · ');
    $('.bytes-sent', card).textContent = this.ends.length
      ? `${bytes(this.confirmedBytes)} of ${bytes(file.size)}` : '–';
    if (s) {
      $('.chunks-loaded', card).textContent = `${fmt(s.chunks_loaded)} / ${fmt(s.expected_chunks ?? s.chunks_received)}`;
      setNumber($('.rows-loaded', card), s.rows_loaded);
      setNumber($('.rows-rejected', card), s.rows_rejected);
      const rate = this.rowsPerSecond();
      $('.rows-rate', card).textContent = rate == null ? '–' : fmt(Math.round(rate));
      show($('.engine-failed', card), s.chunks_failed > 0);
      $('.engine-failed-text', card).textContent = `${s.chunks_failed} chunk(s) failed to load.`;
    }
    const failedBox = $('.failed-chunks', card);
    show(failedBox, this.failed.size > 0);
    $('ul', failedBox).replaceChildren(...[...this.failed].map(([n, why]) => {
      const item = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = 'Retry';
      button.addEventListener('click', () => { button.disabled = true; this.retrySend(n); });
      item.append(`Chunk ${n}: ${why} `, button);
      return item;
    }));
    renderOverall();
  }

  // The first rejected rows in the table (read as JSON lines, stopping after REJECTED_SHOWN).
  async showRejected() {
    const total = this.status.rows_rejected;
    show($('.rejected', this.card), total > 0);
    if (!total || this.rejectedShown) return;
    const res = await api('GET', `/api/upload/${this.folder}/rejected?format=json`);
    if (!res.ok) throw new Error(errorText(res, await readJson(res)));
    const rows = await firstJsonLines(res, REJECTED_SHOWN);
    $('.rejected-table tbody', this.card).replaceChildren(...rows.map((row) =>
      tableRow([row.chunk, row.line, row.reason, row.raw], [0, 1])));
    // With reject-chunk, every row of a refused chunk counts as rejected, but only the bad
    // ones are listed with a reason.
    let note = `(${fmt(total)})`;
    if (rows.length === REJECTED_SHOWN) note = `(first ${fmt(rows.length)} of ${fmt(total)})`;
    else if (rows.length < total) note = `(${fmt(total)} rejected, ${fmt(rows.length)} listed with a reason)`;
    $('.rejected-note', this.card).textContent = note;
    this.rejectedShown = true;
  }
}

function setNumber(element, value) {
  element.textContent = fmt(value);
  element.dataset.value = String(value);
}

function tableRow(cells, numeric = []) {
  const tr = document.createElement('tr');
  cells.forEach((value, i) => {
    const td = document.createElement('td');
    if (value instanceof Node) td.append(value); else td.textContent = value ?? '';
    if (numeric.includes(i)) td.className = 'num';
    tr.append(td);
  });
  return tr;
}

// Reads at most `max` JSON lines from a streamed answer, then stops reading.
async function firstJsonLines(res, max) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const rows = [];
  let pending = '';
  for (;;) {
    const { value, done } = await reader.read();
    pending += value ?? '';
    const lines = pending.split('\n');
    pending = done ? '' : lines.pop();
    for (const line of lines) if (line.trim() && rows.length < max) rows.push(JSON.parse(line));
    if (done || rows.length >= max) break;
  }
  reader.cancel().catch(() => {});
  return rows;
}

function renderOverall() {
  const active = uploads.filter((u) => !u.refused);
  const total = active.reduce((sum, u) => sum + u.file.size, 0);
  const done = active.reduce((sum, u) => sum + u.confirmedBytes, 0);
  $('#overall-progress').value = total ? done / total : 0;
  $('#overall-text').textContent = total ? `${bytes(done)} of ${bytes(total)} sent` : 'nothing sent yet';
}

const XLSX = 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet';

function isWorkbook(file) {
  return file.name.toLowerCase().endsWith('.xlsx') || file.type === XLSX;
}

// CSV and XLSX files are sent; anything else (old .xls included) is shown as refused.
function refusal(file) {
  const name = file.name.toLowerCase();
  if (isWorkbook(file)) return null;
  if (name.endsWith('.xls')) return 'Old .xls workbooks are not accepted: save the sheet as .xlsx or CSV.';
  const csvLike = /\.(csv|txt)$/.test(name) || ['text/csv', 'text/plain', 'application/vnd.ms-excel'].includes(file.type);
  return csvLike ? null : 'Only CSV files can be uploaded.';
}

function addFiles(files) {
  for (const file of files) {
    const upload = new FileUpload(file);
    uploads.push(upload);
    const reason = refusal(file);
    if (reason) { upload.refuse(reason); continue; }
    // The options in force when the file was chosen, not when its turn comes.
    upload.dataset = $('#dataset').value;
    upload.onError = $('#on-error').value;
    queue = queue.then(() => upload.run());
  }
  renderOverall();
}

// ---------------------------------------------------------------------------------------------
// Actions shared by the cards and the uploads list.

// Retries the chunks the status lists as failed, waiting out a 429 as the chunk sends do.
async function retryFailedChunks(folder) {
  const status = await apiJson('GET', `/api/upload/${folder}`);
  let queued = 0;
  for (const n of status.failed_chunks ?? []) {
    for (let attempt = 1; ; attempt += 1) {
      const res = await api('POST', `/api/upload/${folder}/chunks/${n}/retry`);
      if (res.status === 202) { queued += 1; break; }
      if (res.status === 409) break; // retried meanwhile, or no longer retryable
      if ((res.status === 429 || res.status === 503) && attempt < ATTEMPTS) {
        const after = Number(res.headers.get('Retry-After'));
        await sleep(after > 0 ? after * 1000 : 500 * 2 ** attempt);
        continue;
      }
      throw new Error(errorText(res, await readJson(res)));
    }
  }
  return queued;
}

// The rejected rows as a CSV file. The request needs the token, so a plain link cannot do:
// fetch it, and hand the browser a Blob URL to save.
async function downloadRejected(folder) {
  const res = await api('GET', `/api/upload/${folder}/rejected`);
  if (!res.ok) throw new Error(errorText(res, await readJson(res)));
  const url = URL.createObjectURL(await res.blob());
  const link = document.createElement('a');
  link.href = url;
  link.download = `rejected-${folder}.csv`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// ---------------------------------------------------------------------------------------------
// The uploads list.

let refreshing = null;

function refreshUploads() {
  // Calls that come while a refresh runs share it.
  refreshing ??= loadUploads().finally(() => { refreshing = null; });
  return refreshing;
}

async function loadUploads() {
  const message = $('#uploads-message');
  try {
    const { uploads: list } = await apiJson('GET', '/api/uploads?limit=50');
    // Keep the outcome of the last action; only replace a failed refresh's message.
    if (message.dataset.kind === 'refresh') message.textContent = '';
    if (!list.length) {
      message.textContent = 'No uploads yet.';
      message.dataset.kind = 'refresh';
    }
    $('#uploads tbody').replaceChildren(...list.map(uploadRow));
  } catch (err) {
    message.textContent = `Could not list the uploads: ${err.message}`;
    message.dataset.kind = 'refresh';
  }
}

function uploadRow(u) {
  const id = document.createElement('code');
  id.textContent = u.folder.slice(0, 8);
  id.title = u.folder;
  const created = parseTime(u.created_at);
  const chunks = `${fmt(u.chunks_loaded)} / ${fmt(u.expected_chunks ?? u.chunks_received)}`
    + (u.chunks_failed ? ` (${u.chunks_failed} failed)` : '');
  const actions = document.createElement('span');
  actions.className = 'actions';
  const action = (label, name, enabled) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'quiet';
    button.textContent = label;
    button.dataset.action = name;
    button.disabled = !enabled;
    actions.append(button);
  };
  action('Abort', 'abort', u.state === 'receiving' || u.state === 'processing');
  action('Undo import', 'undo', u.state !== 'undone');
  if (u.chunks_failed > 0) action('Retry failed', 'retry', true);
  if (u.rows_rejected > 0) action('Rejected CSV', 'download', true);
  const state = document.createElement('span');
  state.className = `badge state-${u.state}`;
  state.textContent = u.state;
  const when = created ? created.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' }) : u.created_at;
  const tr = tableRow([id, u.dataset, state, when,
    chunks, fmt(u.rows_loaded), fmt(u.rows_rejected), actions], [5, 6]);
  tr.dataset.folder = u.folder;
  tr.dataset.state = u.state;
  return tr;
}

async function uploadAction(folder, name) {
  const message = $('#uploads-message');
  message.dataset.kind = 'action';
  const short = folder.slice(0, 8);
  try {
    if (name === 'abort') {
      await apiJson('DELETE', `/api/upload/${folder}`);
      message.textContent = `Upload ${short} aborted.`;
    } else if (name === 'undo') {
      if (!window.confirm(`Delete every row upload ${short} loaded? This cannot be undone.`)) return;
      const answer = await apiJson('DELETE', `/api/upload/${folder}?rows=true`);
      message.textContent = `Upload ${short} undone: ${fmt(answer.rows_deleted ?? 0)} rows deleted.`;
    } else if (name === 'retry') {
      message.textContent = `Upload ${short}: ${await retryFailedChunks(folder)} chunk(s) queued to load again.`;
    } else if (name === 'download') {
      await downloadRejected(folder);
      return;
    }
  } catch (err) {
    message.textContent = `Upload ${short}: ${err.message}`;
  }
  // A card of this page follows the new state too.
  uploads.find((u) => u.folder === folder)?.poll();
  await refreshUploads();
}

// ---------------------------------------------------------------------------------------------
// Page wiring.

function showSignedIn() {
  $('#signed-in .who').textContent = auth.clientId;
  show($('#signed-in'), true);
  show($('#sign-in-panel'), false);
  show($('#workspace'), true);
  refreshUploads();
  loadDatasets().catch(() => { /* the built-in choice in the page stays */ });
}

// The dataset picker lists what the server takes (`GET /api/datasets`), with each header.
async function loadDatasets() {
  const { datasets } = await apiJson('GET', '/api/datasets');
  const select = $('#dataset');
  const chosen = select.value;
  select.replaceChildren(...datasets.map((dataset) => {
    const option = document.createElement('option');
    option.value = dataset.name;
    option.textContent = `${dataset.name} (${dataset.header})`;
    return option;
  }));
  if (datasets.some((dataset) => dataset.name === chosen)) select.value = chosen;
}

function showSignedOut(message) {
  show($('#signed-in'), false);
  show($('#sign-in-panel'), true);
  // The workspace stays visible while uploads wait for a new sign-in.
  show($('#workspace'), uploads.length > 0);
  const error = $('#sign-in-error');
  error.textContent = message ?? '';
  show(error, Boolean(message));
  if (auth.clientId) $('#client-id').value = auth.clientId;
}

function wire() {
  $('#sign-in-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = $('#sign-in');
    button.disabled = true;
    try {
      await signIn($('#client-id').value.trim(), $('#client-secret').value);
      $('#client-secret').value = '';
    } catch (err) {
      showSignedOut(`Sign-in failed: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  });
  $('#sign-out').addEventListener('click', () => signOut());

  const input = $('#files');
  input.addEventListener('change', () => {
    addFiles([...input.files]);
    input.value = ''; // choosing the same file again is a new upload
  });

  // Dropping a file anywhere else would make the browser open it instead of the page.
  for (const type of ['dragover', 'drop']) window.addEventListener(type, (e) => e.preventDefault());
  const zone = $('#drop-zone');
  for (const type of ['dragenter', 'dragover']) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      event.dataTransfer.dropEffect = 'copy';
      zone.classList.add('over');
    });
  }
  zone.addEventListener('dragleave', (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove('over');
  });
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('over');
    addFiles([...event.dataTransfer.files]);
  });

  $('#pause').addEventListener('click', () => setPaused(true));
  $('#resume').addEventListener('click', () => setPaused(false));
  $('#refresh-uploads').addEventListener('click', () => refreshUploads());
  $('#uploads').addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    if (button) uploadAction(button.closest('tr').dataset.folder, button.dataset.action);
  });

  if (auth.token && Date.now() < auth.expiresAt) showSignedIn();
  else showSignedOut();
}

wire();
