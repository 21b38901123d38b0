// "Start a call": POST /calls from a form. A refusal shows the server's (or the provider's)
// own message next to the form.

import { api } from './api.js';
import { h, replace } from './dom.js';

export const title = 'Start a call';

export function render(main) {
  const field = (name, label, attributes = {}, hint = '') => h('div', { class: 'field' },
    h('label', { for: `call-${name}` }, label),
    h('input', { id: `call-${name}`, name, 'aria-describedby': hint ? `call-${name}-hint` : null, ...attributes }),
    hint ? h('p', { class: 'hint', id: `call-${name}-hint` }, hint) : null);
  const providers = h('select', { id: 'call-provider', name: 'provider' }, h('option', { value: '' }, 'the only one configured'));
  const result = h('div', { id: 'start-result', role: 'alert', 'aria-live': 'assertive' });
  const form = h('form', { class: 'card narrow', id: 'start-form', novalidate: true },
    h('h1', {}, 'Start a call'),
    field('to', 'Number to call', { type: 'tel', required: true, placeholder: '+15551234567', autocomplete: 'off' }, 'E.164: + and the country code.'),
    h('div', { class: 'field' }, h('label', { for: 'call-provider' }, 'Provider'), providers),
    field('from', 'Call from', { type: 'tel', placeholder: 'the provider\'s number' }),
    field('prompt', 'Prompt template', { value: 'outbound' }, 'A file in the prompts folder, without .md.'),
    h('div', { class: 'field' },
      h('label', { for: 'call-vars' }, 'Template values'),
      h('textarea', { id: 'call-vars', name: 'vars', rows: 4, placeholder: 'name = Asha\ncompany = Acme Dental', 'aria-describedby': 'call-vars-hint' }),
      h('p', { class: 'hint', id: 'call-vars-hint' }, 'One per line: name = value. They fill the template\'s {{placeholders}}.')),
    field('campaign', 'Campaign', { placeholder: 'optional tag' }),
    h('button', { type: 'submit' }, 'Call'),
    result);
  replace(main, form);
  fetch('/health', { cache: 'no-store' }).then((response) => response.json()).then((health) => {
    for (const name of health.providers ?? []) providers.append(h('option', { value: name }, name));
  }).catch(() => {});

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { to: String(data.get('to')).trim() };
    for (const name of ['provider', 'from', 'prompt', 'campaign']) {
      const value = String(data.get(name) ?? '').trim();
      if (value) body[name] = value;
    }
    let vars;
    try {
      vars = parseVars(String(data.get('vars') ?? ''));
    } catch (problem) {
      show(result, 'error', problem.message);
      return;
    }
    if (Object.keys(vars).length) body.vars = vars;
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    show(result, 'hint', 'Calling…');
    try {
      const record = await api('/calls', { method: 'POST', body });
      replace(result, h('p', { class: 'ok' }, 'Placed: ', h('a', { href: `#/calls/${encodeURIComponent(record.id)}` }, `call ${record.id}`), ` (${record.status}).`));
    } catch (refusal) {
      const failed = refusal.body?.id;
      replace(result, h('p', { class: 'error' }, refusal.message,
        failed ? [' ', h('a', { href: `#/calls/${encodeURIComponent(failed)}` }, 'The failed attempt\'s record.')] : null));
    } finally {
      button.disabled = false;
    }
  });
  form.querySelector('#call-to').focus();
}

function show(element, kind, text) {
  replace(element, h('p', { class: kind }, text));
}

/** `name = value` lines as an object; a line without `=` is refused, naming it. */
function parseVars(text) {
  const vars = {};
  for (const [n, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line) continue;
    const at = line.indexOf('=');
    if (at < 1) throw new Error(`Template values, line ${n + 1}: write name = value`);
    vars[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return vars;
}
