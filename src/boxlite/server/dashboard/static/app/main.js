// The dashboard page: login, boxes (with metrics sparklines), a box's terminal, files and logs,
// images. All server data is rendered through dom.js (text nodes only).

import { api, ApiError, boxPath, query, setCsrf, setUnauthorizedHandler } from './api.js';
import { $, bytes, h, replaceRows, sparkline } from './dom.js';
import { firstFile, readLimited, tarOneFile } from './tar.js';
import { TerminalSession } from './terminal.js';

const POLL_MS = 2000;
const HISTORY = 45;
const MAX_SAMPLED = 50; // boxes whose metrics are polled (the first running ones listed)
const DOWNLOAD_LIMIT = 256 * 1024 * 1024;

const state = {
  boxes: [],
  history: new Map(), // box id -> {cpu: [], mem: []}
  selected: null, // box id
  terminal: null,
  filesPath: '/',
  filesSeq: 0,
  timer: null,
  logsTimer: null,
};

function status(text) { $('#status').textContent = text; }
function showError(sel, err) { $(sel).textContent = err ? String(err.message || err) : ''; }

// --- login ---------------------------------------------------------------------------------
async function start() {
  setUnauthorizedHandler(() => showLogin());
  let session;
  try {
    session = await (await fetch('/dashboard/session', { credentials: 'same-origin', cache: 'no-store' })).json();
  } catch (e) {
    status('server unreachable');
    return;
  }
  if (!session.authenticated) {
    showLogin();
    return;
  }
  setCsrf(session.csrf);
  $('#logout').hidden = !session.auth_required;
  showApp();
}

function showLogin() {
  stopPolling();
  closeTerminal();
  $('#nav').hidden = true;
  $('#view-boxes').hidden = true;
  $('#view-images').hidden = true;
  $('#login').hidden = false;
  $('#login-key').focus();
}

$('#login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = $('#login-key');
  showError('#login-error', null);
  try {
    const answer = await api('POST', '/dashboard/login', { json: { key: input.value } });
    input.value = '';
    setCsrf(answer.csrf);
    $('#login').hidden = true;
    showApp();
  } catch (err) {
    showError('#login-error', err.status === 401 ? 'Wrong API key.' : err);
  }
});

$('#logout').addEventListener('click', async () => {
  try { await api('POST', '/dashboard/logout'); } catch (e) { /* logged out anyway */ }
  setCsrf('');
  showLogin();
});

function showApp() {
  $('#login').hidden = true;
  $('#nav').hidden = false;
  switchView('boxes');
}

// --- views ---------------------------------------------------------------------------------
for (const tab of document.querySelectorAll('nav .tab[data-view]')) {
  tab.addEventListener('click', () => switchView(tab.dataset.view));
}

function switchView(view) {
  for (const tab of document.querySelectorAll('nav .tab[data-view]')) tab.classList.toggle('active', tab.dataset.view === view);
  $('#view-boxes').hidden = view !== 'boxes';
  $('#view-images').hidden = view !== 'images';
  stopPolling();
  if (view === 'boxes') {
    refreshBoxes();
    state.timer = setInterval(refreshBoxes, POLL_MS);
  } else {
    refreshImages();
  }
}

function stopPolling() {
  clearInterval(state.timer);
  state.timer = null;
}

// --- boxes ---------------------------------------------------------------------------------
function ports(info) {
  const published = (info.network && info.network.published_ports) || [];
  return published.map((p) => `${p.host_ip}:${p.host_port}→${p.guest_port}/${p.protocol}`).join(', ');
}

async function refreshBoxes() {
  try {
    state.boxes = await api('GET', '/v1/boxes');
    status('');
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) status(String(err.message));
    return;
  }
  await Promise.all(state.boxes.filter((b) => b.state.running).slice(0, MAX_SAMPLED).map(sampleMetrics));
  renderBoxes();
  if (state.selected && !state.boxes.some((b) => b.id === state.selected)) selectBox(null);
}

async function sampleMetrics(info) {
  let m;
  try { m = await api('GET', boxPath(info.id, '/metrics')); } catch (e) { return; }
  const hist = state.history.get(info.id) || { cpu: [], mem: [] };
  hist.cpu.push(m.cpu_percent ?? null);
  hist.mem.push(m.memory_bytes ?? null);
  hist.cpu = hist.cpu.slice(-HISTORY);
  hist.mem = hist.mem.slice(-HISTORY);
  state.history.set(info.id, hist);
}

function metricCell(values, max, format) {
  const last = values.length ? values[values.length - 1] : null;
  return h('td', {}, values.length ? sparkline(values, max) : '', h('span', { class: 'sparkval', text: last === null ? '' : format(last) }));
}

function boxRow(info) {
  const hist = state.history.get(info.id) || { cpu: [], mem: [] };
  const running = info.state.running;
  const action = (label, fn, enabled = true) => h('button', { type: 'button', disabled: !enabled, onclick: fn, 'data-action': label.toLowerCase() }, label);
  return h('tr', { 'data-box-id': info.id },
    h('td', { class: 'box-name', text: info.name || '' }),
    h('td', { class: 'mono', text: info.id.slice(0, 12), title: info.id }),
    h('td', { class: `state-${info.state.status}`, text: info.state.status }),
    h('td', { class: 'mono', text: info.image }),
    h('td', { class: 'mono', text: ports(info) }),
    metricCell(hist.cpu, 10, (v) => `${v.toFixed(1)}%`), // scale: at least 0-10 %, more if used
    metricCell(hist.mem, 0, bytes), // scale: 0 to the highest value seen
    h('td', {}, h('div', { class: 'actions' },
      action('Open', () => selectBox(info.id)),
      action('Start', () => lifecycle(info.id, 'start'), !running),
      action('Stop', () => lifecycle(info.id, 'stop'), running),
      action('Remove', () => removeBox(info)),
    )));
}

function renderBoxes() {
  replaceRows($('#boxes tbody'), state.boxes.map(boxRow));
  $('#boxes-empty').hidden = state.boxes.length > 0;
}

async function lifecycle(id, verb) {
  try {
    await api('POST', boxPath(id, `/${verb}`));
  } catch (err) {
    status(String(err.message));
  }
  refreshBoxes();
}

async function removeBox(info) {
  if (!window.confirm(`Remove box ${info.name || info.id}?`)) return;
  try {
    await api('DELETE', `${boxPath(info.id)}?force=true`);
    state.history.delete(info.id);
  } catch (err) {
    status(String(err.message));
  }
  refreshBoxes();
}

$('#create-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  showError('#create-error', null);
  const image = $('#create-image').value.trim();
  const rootfs = $('#create-rootfs').value.trim();
  const name = $('#create-name').value.trim();
  const options = rootfs ? { rootfs_path: rootfs } : { image };
  if (!image && !rootfs) { showError('#create-error', 'Give an image (or a root file system path on the server).'); return; }
  $('#create-submit').disabled = true;
  status('creating…');
  try {
    const info = await api('POST', '/v1/boxes', { json: { options, name: name || null } });
    if ($('#create-start').checked) await api('POST', boxPath(info.id, '/start'));
    $('#create-name').value = '';
    await refreshBoxes();
    selectBox(info.id);
  } catch (err) {
    showError('#create-error', err);
  } finally {
    $('#create-submit').disabled = false;
    status('');
  }
});

// --- one box: terminal, files, logs -----------------------------------------------------------
function selectBox(id) {
  if (state.selected !== id) closeTerminal();
  state.selected = id;
  $('#detail').hidden = !id;
  if (!id) return;
  const info = state.boxes.find((b) => b.id === id);
  $('#detail-name').textContent = info ? (info.name || info.id.slice(0, 12)) : id;
  $('#detail').dataset.boxId = id;
  state.filesPath = '/';
  $('#files-path').value = '/';
  $('#files tbody').replaceChildren();
  delete $('#files').dataset.path;
  $('#logs').textContent = '';
  const sub = document.querySelector('.subtab.active').dataset.sub;
  if (sub === 'files') listFiles();
  if (sub === 'logs') loadLogs();
}

for (const tab of document.querySelectorAll('.subtab')) {
  tab.addEventListener('click', () => {
    for (const t of document.querySelectorAll('.subtab')) t.classList.toggle('active', t === tab);
    for (const sub of document.querySelectorAll('.sub')) sub.hidden = sub.id !== `sub-${tab.dataset.sub}`;
    if (tab.dataset.sub === 'files') listFiles();
    if (tab.dataset.sub === 'logs') loadLogs();
    if (tab.dataset.sub === 'terminal' && state.terminal) state.terminal.fit.fit();
  });
}

function closeTerminal() {
  if (state.terminal) state.terminal.close();
  state.terminal = null;
  $('#term-status').textContent = '';
}

$('#term-form').addEventListener('submit', (event) => {
  event.preventDefault();
  if (!state.selected) return;
  closeTerminal();
  const command = $('#term-command').value.trim() || '/bin/sh';
  state.terminal = new TerminalSession($('#terminal'), state.selected, command, (s) => { $('#term-status').textContent = s; });
});
$('#term-close').addEventListener('click', closeTerminal);

function joinPath(dir, name) { return dir.endsWith('/') ? dir + name : `${dir}/${name}`; }
function parentPath(dir) {
  const trimmed = dir.replace(/\/+$/, '');
  const cut = trimmed.lastIndexOf('/');
  return cut <= 0 ? '/' : trimmed.slice(0, cut);
}

async function listFiles(path) {
  if (!state.selected) return;
  const dir = path || $('#files-path').value.trim() || '/';
  showError('#files-error', null);
  const seq = ++state.filesSeq; // only the newest listing is shown
  let listing;
  try {
    listing = await api('GET', `/dashboard/api/boxes/${encodeURIComponent(state.selected)}/files?${query({ path: dir })}`);
  } catch (err) {
    if (seq === state.filesSeq) showError('#files-error', err);
    return;
  }
  if (seq !== state.filesSeq) return;
  $('#files').dataset.path = listing.path;
  state.filesPath = listing.path;
  $('#files-path').value = listing.path;
  const entries = [...listing.entries];
  entries.sort((a, b) => (b.type === 'dir') - (a.type === 'dir') || (a.name < b.name ? -1 : 1));
  const rows = entries.map((e) => {
    const full = joinPath(listing.path, e.name);
    const name = e.type === 'dir'
      ? h('button', { type: 'button', class: 'linkish file-name', onclick: () => listFiles(full), text: e.name })
      : h('span', { class: 'file-name', text: e.link ? `${e.name} → ${e.link}` : e.name });
    return h('tr', { 'data-name': e.name },
      h('td', { class: 'mono' }, name),
      h('td', { text: e.type }),
      h('td', { text: e.size === undefined ? '' : bytes(e.size) }),
      h('td', { class: 'mono', text: e.mode || '' }),
      h('td', {}, h('button', { type: 'button', 'data-action': 'download', onclick: () => download(full, e) }, 'Download')));
  });
  if (listing.truncated) rows.push(h('tr', {}, h('td', { colspan: 5, text: '(listing truncated)' })));
  replaceRows($('#files tbody'), rows);
}

$('#files-form').addEventListener('submit', (event) => { event.preventDefault(); listFiles(); });
// A path being typed wins over a listing still on its way: drop that listing, or it would
// overwrite the field with its own path.
$('#files-path').addEventListener('input', () => { state.filesSeq += 1; });
$('#files-up').addEventListener('click', () => listFiles(parentPath(state.filesPath)));

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function download(path, entry) {
  showError('#files-error', null);
  try {
    const response = await api('GET', `${boxPath(state.selected, '/archive')}?${query({ path })}`, { raw: true });
    const data = await readLimited(response, DOWNLOAD_LIMIT);
    if (entry.type === 'file') {
      const content = firstFile(data);
      if (content === null) throw new Error('the archive holds no regular file');
      saveBlob(new Blob([content], { type: 'application/octet-stream' }), entry.name);
    } else {
      saveBlob(new Blob([data], { type: 'application/x-tar' }), `${entry.name}.tar`);
    }
  } catch (err) {
    showError('#files-error', err);
  }
}

$('#upload-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const file = $('#upload-file').files[0];
  if (!file || !state.selected) return;
  showError('#files-error', null);
  $('#upload-submit').disabled = true;
  try {
    const body = tarOneFile(file.name, file);
    const params = query({ path: state.filesPath, name: file.name, include_parent: 'true' });
    await api('PUT', `${boxPath(state.selected, '/archive')}?${params}`, { body, headers: { 'Content-Type': 'application/x-tar' } });
    $('#upload-file').value = '';
    await listFiles(state.filesPath);
  } catch (err) {
    showError('#files-error', err);
  } finally {
    $('#upload-submit').disabled = false;
  }
});

async function loadLogs() {
  if (!state.selected) return;
  try {
    const text = await api('GET', `/dashboard/api/boxes/${encodeURIComponent(state.selected)}/logs`);
    const pre = $('#logs');
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = text || '(no output from the box\'s main process)';
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  } catch (err) {
    $('#logs').textContent = String(err.message);
  }
}

$('#logs-refresh').addEventListener('click', loadLogs);
$('#logs-follow').addEventListener('change', (event) => {
  clearInterval(state.logsTimer);
  state.logsTimer = event.target.checked ? setInterval(loadLogs, POLL_MS) : null;
});

// --- images --------------------------------------------------------------------------------
async function refreshImages() {
  showError('#images-error', null);
  let images;
  try {
    images = await api('GET', '/v1/images');
  } catch (err) {
    showError('#images-error', err);
    return;
  }
  replaceRows($('#images tbody'), images.map((img) => h('tr', { 'data-reference': img.reference },
    h('td', { class: 'mono', text: img.reference }),
    h('td', { class: 'mono', text: img.digest.slice(0, 19), title: img.digest }),
    h('td', { text: bytes(img.size) }),
    h('td', { text: img.created || '' }),
    h('td', {}, h('div', { class: 'actions' },
      h('button', { type: 'button', 'data-action': 'use', onclick: () => { $('#create-image').value = img.reference; $('#create-rootfs').value = ''; switchView('boxes'); } }, 'Create box'),
      h('button', { type: 'button', 'data-action': 'remove', onclick: () => removeImage(img.reference) }, 'Remove'))))));
}

async function removeImage(reference) {
  if (!window.confirm(`Remove image ${reference}?`)) return;
  try {
    await api('DELETE', `/v1/images/${reference.split('/').map(encodeURIComponent).join('/')}`);
  } catch (err) {
    showError('#images-error', err);
  }
  refreshImages();
}

$('#pull-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const reference = $('#pull-ref').value.trim();
  showError('#images-error', null);
  const progress = $('#pull-progress');
  progress.textContent = 'pulling…';
  const layers = new Map();
  try {
    const response = await api('POST', '/v1/images/pull?progress=true', { json: { reference }, raw: true });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += value;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const event = JSON.parse(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
        if (event.progress) {
          layers.set(event.progress.layer, event.progress);
          const done = [...layers.values()].reduce((s, p) => s + p.downloaded, 0);
          const total = [...layers.values()].reduce((s, p) => s + (p.total || 0), 0);
          progress.textContent = `${bytes(done)} / ${bytes(total)}`;
        } else if (event.error) {
          throw new Error(`${event.error.type}: ${event.error.message}`);
        } else if (event.image) {
          progress.textContent = `pulled ${event.image.reference}`;
        }
      }
    }
  } catch (err) {
    progress.textContent = '';
    showError('#images-error', err);
  }
  refreshImages();
});

start();
