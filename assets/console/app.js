// The console's shell: sign-in, navigation and the views, one module each.
//
// Routes live in the URL's fragment: #/talk, #/calls (with filters), #/calls/<id>, #/start.

import { checkToken, forgetToken, keepToken, token } from './api.js';
import { h, replace } from './dom.js';
import * as talk from './talk.js';
import * as calls from './calls.js';
import * as call from './call.js';
import * as start from './start.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let leaveView = () => {};

function route() {
  const [path, query = ''] = location.hash.replace(/^#/, '').split('?');
  const parts = path.split('/').filter(Boolean);
  const params = new URLSearchParams(query);
  if (parts[0] === 'calls' && parts[1]) return { view: call, name: 'calls', args: [decodeURIComponent(parts[1])] };
  if (parts[0] === 'calls') return { view: calls, name: 'calls', args: [params] };
  if (parts[0] === 'start') return { view: start, name: 'start', args: [] };
  return { view: talk, name: 'talk', args: [] };
}

function show() {
  leaveView();
  leaveView = () => {};
  if (!token()) {
    nav.hidden = true;
    signIn();
    return;
  }
  nav.hidden = false;
  const { view, name, args } = route();
  for (const link of nav.querySelectorAll('a')) {
    if (link.dataset.view === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  replace(main);
  leaveView = view.render(main, ...args) ?? (() => {});
  document.title = `${view.title} · gemini-phone`;
}

function signIn() {
  document.title = 'Sign in · gemini-phone';
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'current-password', required: true,
    'aria-describedby': 'token-help',
  });
  const error = h('p', { id: 'sign-in-error', class: 'error', role: 'alert', hidden: true });
  const form = h('form', { class: 'card narrow', id: 'sign-in' },
    h('h1', {}, 'Sign in'),
    h('label', { for: 'token' }, 'API token'),
    input,
    h('p', { id: 'token-help', class: 'hint' },
      'The server\'s API_TOKEN. It stays in this tab only and is forgotten when the tab closes.'),
    error,
    h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    const candidate = input.value.trim();
    try {
      await checkToken(candidate);
      keepToken(candidate);
      show();
    } catch (refusal) {
      error.textContent = refusal.status === 401
        ? 'That is not this server\'s API token.'
        : refusal.status === 503
          ? 'This server has no API_TOKEN set, so the console is closed: set API_TOKEN and restart it.'
          : `Signing in failed: ${refusal.message}`;
      error.hidden = false;
      input.select();
    }
  });
  replace(main, form);
  input.focus();
}

document.getElementById('sign-out').addEventListener('click', () => {
  forgetToken();
  show();
});
window.addEventListener('console:signed-out', () => {
  forgetToken();
  show();
});
window.addEventListener('hashchange', () => {
  show();
  main.focus({ preventScroll: true });
});
show();
