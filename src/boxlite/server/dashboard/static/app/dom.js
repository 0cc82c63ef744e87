// DOM building without HTML strings: everything from the server (box names, file names, logs)
// is hostile, so it only ever becomes text nodes or attribute values, never markup.

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export const $ = (sel) => document.querySelector(sel);

export function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

export function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

const SVG = 'http://www.w3.org/2000/svg';

// A sparkline of the last values (numbers; null gaps are skipped), scaled to [0, max].
export function sparkline(values, max) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', '0 0 90 22');
  const nums = values.filter((v) => typeof v === 'number' && Number.isFinite(v));
  const top = Math.max(max || 0, ...nums, 1e-9);
  const step = values.length > 1 ? 90 / (values.length - 1) : 0;
  const points = [];
  values.forEach((v, i) => {
    if (typeof v === 'number' && Number.isFinite(v)) points.push(`${(i * step).toFixed(1)},${(21 - (v / top) * 20).toFixed(1)}`);
  });
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('points', points.join(' '));
  svg.append(line);
  return svg;
}
