// One call: what happened, in the order it happened. Status history, the timeline of events,
// the transcript (interrupted agent turns marked), tool calls with their arguments and
// results, latency figures with a small chart, and the recording with its waveform.
//
// Fields a server may not have (`events`, `latency`, `recording_url`) are shown when present
// and explained when absent. A live call's page refreshes itself.

import { api, download } from './api.js';
import { FINAL_STATUSES, h, offset, replace, statusBadge, svg, when } from './dom.js';

export const title = 'Call';

const LIVE_REFRESH_MS = 2000;

export function render(main, id) {
  const body = h('div', { id: 'call', 'aria-busy': 'true' }, 'Loading…');
  replace(main, body);
  let timer = null;
  let stopped = false;
  let shownRecording = null;
  const refresh = async () => {
    let record;
    try {
      record = await api(`/calls/${encodeURIComponent(id)}`);
    } catch (refusal) {
      if (!stopped) replace(body, h('p', { class: 'error', role: 'alert' }, `This call could not be read: ${refusal.message}`));
      return;
    }
    if (stopped) return;
    // The player keeps playing across refreshes: it is built once per recording.
    const player = shownRecording && shownRecording.url === record.recording_url ? shownRecording.element : recording(record);
    shownRecording = { url: record.recording_url, element: player };
    replace(body, page(record, player));
    body.setAttribute('aria-busy', 'false');
    if (!FINAL_STATUSES.has(record.status)) timer = setTimeout(refresh, LIVE_REFRESH_MS);
  };
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    shownRecording?.element.querySelector('audio')?.pause();
  };
}

function page(record, player) {
  const start = record.created_at;
  return [
    h('section', { class: 'card wide' },
      h('p', {}, h('a', { href: '#/calls' }, '← All calls')),
      h('h1', {}, `${record.from} → ${record.to}`),
      h('dl', { class: 'facts' },
        fact('Status', statusBadge(record.status)),
        fact('Direction', record.direction),
        fact('Provider', record.provider),
        fact('Started', when(record.created_at)),
        fact('Length', record.duration_seconds == null ? '—' : `${record.duration_seconds} s`),
        fact('Ended because', record.end_reason ?? '—'),
        record.campaign ? fact('Campaign', record.campaign) : null,
        record.prompt ? fact('Prompt', record.prompt) : null,
        record.answered_by ? fact('Answered by', record.answered_by) : null,
        fact('Id', h('code', {}, record.id)))),
    section('Recording', player),
    section('Transcript', transcript(record)),
    section('Tool calls', tools(record)),
    section('Latency', latency(record)),
    section('Timeline', timeline(record, start)),
    section('Status history', h('ol', { class: 'history' },
      record.history.map((change) => h('li', {}, statusBadge(change.status), ' ', h('time', { datetime: change.at }, when(change.at)))))),
  ];
}

function fact(name, value) {
  return [h('dt', {}, name), h('dd', {}, value)];
}

function section(name, content) {
  const id = `section-${name.toLowerCase().replace(/\W+/g, '-')}`;
  return h('section', { class: 'card wide', 'aria-labelledby': id }, h('h2', { id }, name), content);
}

function transcript(record) {
  if (!record.transcript.length) return h('p', { class: 'hint' }, 'Nothing was said yet.');
  // The server marks an agent line the caller talked over, and cuts it to what they heard.
  return h('ol', { class: 'transcript' }, record.transcript.map((line) => h('li', { class: `who-${line.who}` },
    h('span', { class: 'speaker' }, line.who),
    h('time', { datetime: line.at, title: when(line.at) }, offset(record.created_at, line.at)),
    h('span', { class: 'text' }, line.text),
    line.interrupted ? h('span', { class: 'badge bad', title: 'The caller talked over the agent here; the line ends where they stopped hearing it' }, 'interrupted') : null)));
}

function tools(record) {
  if (!record.tool_events.length) return h('p', { class: 'hint' }, 'The agent called no tools.');
  // Each call is recorded twice: once with its arguments, once with its result, tied by id.
  const calls = new Map();
  for (const event of record.tool_events) {
    const id = event.detail?.id ?? `${event.name}-${event.at}`;
    const entry = calls.get(id) ?? { name: event.name, at: event.at };
    if (event.detail && 'args' in event.detail) entry.args = event.detail.args;
    if (event.detail && 'response' in event.detail) {
      entry.response = event.detail.response;
      entry.answeredAt = event.at;
    }
    calls.set(id, entry);
  }
  return h('ol', { class: 'tools' }, [...calls.values()].map((entry) => h('li', {},
    h('p', {}, h('strong', {}, entry.name), ' ',
      h('time', { datetime: entry.at }, offset(record.created_at, entry.at)),
      entry.answeredAt ? ` · answered after ${new Date(entry.answeredAt) - new Date(entry.at)} ms` : ' · no answer recorded'),
    h('div', { class: 'pair' },
      h('div', {}, h('h3', {}, 'Arguments'), h('pre', {}, JSON.stringify(entry.args ?? {}, null, 2))),
      h('div', {}, h('h3', {}, 'Result'), h('pre', { class: entry.response?.error ? 'error' : '' },
        entry.response === undefined ? '—' : JSON.stringify(entry.response, null, 2)))))));
}

function latency(record) {
  if (!('latency' in record)) return h('p', { class: 'hint' }, 'This server does not measure latency.');
  const figures = record.latency;
  if (!figures) return h('p', { class: 'hint' }, 'Latency figures appear once the call has ended.');
  const ms = (value) => (value == null ? '—' : `${value} ms`);
  const response = figures.response_ms ?? {};
  return [
    h('dl', { class: 'facts' },
      fact('Greeting (from answer)', ms(figures.greeting_ms)),
      fact('Greeting (from stream start)', ms(figures.greeting_from_start_ms)),
      fact('Response p50', ms(response.p50)),
      fact('Response p95', ms(response.p95)),
      fact('Response max', ms(response.max)),
      fact('Barge-ins', figures.barge_ins ?? 0),
      fact('Resumptions', figures.resumptions ?? 0)),
    chart(response.turns ?? [], response.p50),
  ];
}

/** Bars of each turn's response time, with the median as a line. */
function chart(turns, median) {
  if (!turns.length) return h('p', { class: 'hint' }, 'No caller turn was answered.');
  const width = 320;
  const height = 120;
  const top = Math.max(...turns, median ?? 0, 1);
  const slot = width / turns.length;
  const y = (value) => height - (value / top) * (height - 14);
  const bars = turns.map((value, i) => svg('rect', {
    x: (i * slot + slot * 0.15).toFixed(1), y: y(value).toFixed(1),
    width: (slot * 0.7).toFixed(1), height: (height - y(value)).toFixed(1), class: 'bar',
  }, svg('title', {}, `turn ${i + 1}: ${value} ms`)));
  const medianLine = median == null ? [] : [
    svg('line', { x1: 0, x2: width, y1: y(median), y2: y(median), class: 'median' }),
    svg('text', { x: width - 2, y: Math.max(10, y(median) - 3), 'text-anchor': 'end', class: 'label' }, `p50 ${median} ms`),
  ];
  return h('figure', { class: 'chart' },
    svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `Response time of ${turns.length} turns, longest ${Math.max(...turns)} ms` },
      ...bars, ...medianLine),
    h('figcaption', {}, 'Time from the end of each caller turn to the agent\'s answer.'));
}

function timeline(record, start) {
  if (!('events' in record)) return h('p', { class: 'hint' }, 'This server does not record a timeline.');
  if (!record.events.length) return h('p', { class: 'hint' }, 'No events recorded yet.');
  return [
    h('table', { class: 'timeline' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'At'), h('th', { scope: 'col' }, 'Event'), h('th', { scope: 'col' }, 'Detail'))),
      h('tbody', {}, record.events.map((event) => h('tr', {},
        h('td', {}, h('time', { datetime: event.at, title: when(event.at) }, offset(start, event.at))),
        h('td', {}, event.kind.replaceAll('_', ' ')),
        h('td', {}, event.detail ? h('code', {}, detailText(event.detail)) : ''))))),
    record.events_dropped ? h('p', { class: 'hint' }, `${record.events_dropped} more events were not kept.`) : null,
  ];
}

function detailText(detail) {
  return Object.entries(detail).map(([key, value]) => `${key}: ${typeof value === 'string' ? value : JSON.stringify(value)}`).join(', ');
}

/** The player: the recording fetched with the token, with its waveform; click to seek. */
function recording(record) {
  if (!record.recording_url) {
    return h('p', { class: 'hint' }, 'recording_url' in record ? 'This call has no recording.' : 'This server does not record calls.');
  }
  const audio = h('audio', { controls: true, preload: 'metadata' });
  const canvas = h('canvas', { class: 'waveform', width: 960, height: 120, role: 'img', 'aria-label': 'Waveform of the recording: caller above, agent below. Click to seek.' });
  const status = h('p', { class: 'hint' }, 'Loading the recording…');
  const player = h('div', { class: 'player' }, canvas, audio, status);
  (async () => {
    try {
      const blob = await download(record.recording_url);
      audio.src = URL.createObjectURL(blob);
      const context = new OfflineAudioContext(1, 1, 8000);
      const decoded = await context.decodeAudioData(await blob.arrayBuffer());
      const draw = () => drawWaveform(canvas, decoded, audio.duration ? audio.currentTime / audio.duration : 0);
      draw();
      audio.addEventListener('timeupdate', draw);
      canvas.addEventListener('click', (event) => {
        const box = canvas.getBoundingClientRect();
        if (audio.duration) audio.currentTime = ((event.clientX - box.left) / box.width) * audio.duration;
      });
      status.textContent = `${decoded.duration.toFixed(1)} s, ${decoded.numberOfChannels === 2 ? 'caller left, agent right' : 'mono'}.`;
    } catch (error) {
      status.textContent = `The recording could not be played: ${error.message}`;
      status.className = 'error';
    }
  })();
  return player;
}

function drawWaveform(canvas, buffer, progress) {
  const context = canvas.getContext('2d');
  const { width, height } = canvas;
  const styles = getComputedStyle(canvas);
  context.clearRect(0, 0, width, height);
  const channels = Math.min(buffer.numberOfChannels, 2);
  const band = height / channels;
  for (let channel = 0; channel < channels; channel++) {
    const data = buffer.getChannelData(channel);
    const step = Math.max(1, Math.floor(data.length / width));
    const middle = band * channel + band / 2;
    for (let x = 0; x < width; x++) {
      let peak = 0;
      for (let i = x * step; i < Math.min(data.length, (x + 1) * step); i++) peak = Math.max(peak, Math.abs(data[i]));
      context.fillStyle = x / width <= progress ? styles.getPropertyValue('--accent').trim() : styles.getPropertyValue(channel ? '--agent' : '--caller').trim();
      const half = Math.max(0.5, peak * (band / 2 - 2));
      context.fillRect(x, middle - half, 1, half * 2);
    }
  }
}
