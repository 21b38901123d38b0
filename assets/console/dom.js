// Small DOM helpers. Text always goes in as text (never as HTML): transcripts and tool
// results are whatever the caller and the model said.

/** An element: h('p', {class: 'x', onclick: f}, 'text', child…). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  append(element, children);
  return element;
}

/** An SVG element with attributes. */
export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces everything inside `element`. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

/** A local date and time for an RFC 3339 timestamp. */
export function when(at) {
  if (!at) return '';
  const date = new Date(at);
  return Number.isNaN(date.getTime()) ? at : date.toLocaleString();
}

/** `m:ss.s` from `start` to `at` (both RFC 3339). */
export function offset(start, at) {
  const ms = new Date(at) - new Date(start);
  if (!Number.isFinite(ms)) return '';
  const sign = ms < 0 ? '-' : '';
  const total = Math.abs(ms) / 1000;
  const minutes = Math.floor(total / 60);
  const seconds = (total % 60).toFixed(1).padStart(4, '0');
  return `${sign}${minutes}:${seconds}`;
}

/** Statuses after which nothing more happens to a call. */
export const FINAL_STATUSES = new Set(['machine', 'completed', 'busy', 'no-answer', 'failed', 'canceled']);

/** A coloured status label. */
export function statusBadge(status) {
  const kind = status === 'in-progress' || status === 'ringing' || status === 'queued' ? 'live'
    : status === 'completed' ? 'ok' : 'bad';
  return h('span', { class: `badge ${kind}` }, status);
}
