// The call list: the /calls filters (status, campaign, direction), newest first. While any
// listed call is live the list refreshes every few seconds, without a reload.

import { api } from './api.js';
import { FINAL_STATUSES, h, replace, statusBadge, when } from './dom.js';

export const title = 'Calls';

const STATUSES = ['queued', 'ringing', 'in-progress', 'machine', 'completed', 'busy', 'no-answer', 'failed', 'canceled'];
/** Refresh period while a listed call is live, and otherwise. */
const LIVE_REFRESH_MS = 3000;
const IDLE_REFRESH_MS = 15000;

export function render(main, params) {
  const filters = {
    status: params.get('status') ?? '',
    campaign: params.get('campaign') ?? '',
    direction: params.get('direction') ?? '',
  };
  const select = (name, label, options) => h('div', { class: 'field' },
    h('label', { for: `filter-${name}` }, label),
    h('select', { id: `filter-${name}`, name },
      h('option', { value: '' }, 'any'),
      options.map((value) => h('option', { value, selected: filters[name] === value }, value))));
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter calls' },
    select('status', 'Status', STATUSES),
    select('direction', 'Direction', ['inbound', 'outbound']),
    h('div', { class: 'field' },
      h('label', { for: 'filter-campaign' }, 'Campaign'),
      h('input', { id: 'filter-campaign', name: 'campaign', value: filters.campaign, placeholder: 'any' })),
    h('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (String(value).trim()) query.set(name, String(value).trim());
    location.hash = `#/calls${query.size ? `?${query}` : ''}`;
  });
  form.addEventListener('change', (event) => {
    if (event.target.tagName === 'SELECT') form.requestSubmit();
  });

  const list = h('div', { id: 'call-list', 'aria-live': 'polite', 'aria-busy': 'true' }, 'Loading…');
  const note = h('p', { class: 'hint', id: 'refresh-note' });
  replace(main, h('section', { class: 'card wide' },
    h('h1', {}, 'Calls'), form, note, list));

  let timer = null;
  let stopped = false;
  const refresh = async () => {
    let live = false;
    try {
      const query = new URLSearchParams({ limit: '100' });
      for (const [name, value] of Object.entries(filters)) if (value) query.set(name, value);
      const { calls } = await api(`/calls?${query}`);
      if (stopped) return;
      live = calls.some((record) => !FINAL_STATUSES.has(record.status));
      replace(list, calls.length ? table(calls) : h('p', {}, 'No calls match.'));
      note.textContent = live ? 'Live calls: refreshing every few seconds.' : '';
    } catch (refusal) {
      if (stopped) return;
      replace(list, h('p', { class: 'error', role: 'alert' }, `The calls could not be read: ${refusal.message}`));
    }
    list.setAttribute('aria-busy', 'false');
    if (!stopped) timer = setTimeout(refresh, live ? LIVE_REFRESH_MS : IDLE_REFRESH_MS);
  };
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function table(calls) {
  return h('table', { class: 'calls' },
    h('caption', { class: 'visually-hidden' }, 'Calls, newest first'),
    h('thead', {}, h('tr', {},
      ['Started', 'Call', 'Direction', 'Provider', 'Status', 'Length', 'Ended because'].map((name) => h('th', { scope: 'col' }, name)))),
    h('tbody', {}, calls.map((record) => h('tr', { dataset: { id: record.id, status: record.status } },
      h('td', { 'data-label': 'Started' }, when(record.created_at)),
      h('td', { 'data-label': 'Call' }, h('a', { href: `#/calls/${encodeURIComponent(record.id)}` }, `${record.from} → ${record.to}`)),
      h('td', { 'data-label': 'Direction' }, record.direction),
      h('td', { 'data-label': 'Provider' }, record.provider),
      h('td', { 'data-label': 'Status' }, statusBadge(record.status)),
      h('td', { 'data-label': 'Length' }, record.duration_seconds == null ? '' : `${record.duration_seconds} s`),
      h('td', { 'data-label': 'Ended because' }, record.end_reason ?? '')))));
}
